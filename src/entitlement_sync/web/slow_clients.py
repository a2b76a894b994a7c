"""A total deadline on reading a request body, so that a client trickling its body a byte at a time holds
a worker thread for `seconds` at most, then hears 408.

A socket timeout alone would not do: it bounds each recv, and gunicorn's body reader loops over recvs
until it has what it asked for, so one byte every few seconds would keep a read alive for ever. Instead one
watchdog thread per process shuts the reading side of a connection whose deadline has passed: the blocked
recv returns at once, and the read fails with BodyTooSlow.
"""

from __future__ import annotations

import heapq
import itertools
import socket
import threading
import time
from collections.abc import Iterable
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from werkzeug.exceptions import RequestTimeout

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment


class BodyTooSlow(RequestTimeout):
    description = "request body not received in time"


class Watch:
    __slots__ = ("connection", "expired", "released")

    def __init__(self, connection: socket.socket) -> None:
        self.connection = connection
        self.expired = False
        self.released = False


# The watchdog may cut a connection this much after its deadline, so that one wake-up serves every deadline
# that falls within it: under load a request arrives every few milliseconds, each with its own deadline.
LATENESS_SECONDS = 0.25


class Watchdog:
    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._due: list[tuple[float, int, Watch]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._wakes_at = 0.0  # when the watchdog looks next (monotonic); 0: it is looking now

    def watch(self, connection: socket.socket, deadline: float) -> Watch:
        watch = Watch(connection)
        with self._condition:
            heapq.heappush(self._due, (deadline, next(self._order), watch))
            if self._thread is None:  # started lazily: in the gunicorn worker, after the fork
                self._thread = threading.Thread(target=self._run, name="body-deadline", daemon=True)
                self._thread.start()
            # Deadlines are now + the same seconds: while any is pending the watchdog already looks in time, and
            # a request costs no thread switch.
            if deadline < self._wakes_at:
                self._wakes_at = 0.0
                self._condition.notify()
        return watch

    def release(self, watch: Watch) -> None:
        """The request is done with its body: the connection is not ours to cut any more."""
        with self._condition:
            watch.released = True

    def _run(self) -> None:
        with self._condition:
            while True:
                now = time.monotonic()
                while self._due and self._due[0][0] <= now:
                    _, _, watch = heapq.heappop(self._due)
                    if not watch.released:
                        watch.expired = True
                        with suppress(OSError):  # the client may have gone already
                            watch.connection.shutdown(socket.SHUT_RD)
                self._wakes_at = self._due[0][0] + LATENESS_SECONDS if self._due else float("inf")
                self._condition.wait(None if not self._due else self._wakes_at - now)
                self._wakes_at = 0.0


class BodyDeadline:
    """WSGI middleware: under gunicorn (which hands the app its socket), every body read ends by the deadline."""

    def __init__(self, app: WSGIApplication, seconds: float, watchdog: Watchdog | None = None) -> None:
        self._app = app
        self._seconds = seconds
        self._watchdog = watchdog or Watchdog()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        connection = environ.get("gunicorn.socket")
        if connection is None or "wsgi.input" not in environ or not _has_body(environ):
            return self._app(environ, start_response)
        watch = self._watchdog.watch(connection, time.monotonic() + self._seconds)
        environ["wsgi.input"] = _WatchedInput(environ["wsgi.input"], watch)
        try:
            # Flask reads the body inside the view, so it is read (or refused) by the time this returns.
            return self._app(environ, start_response)
        finally:
            self._watchdog.release(watch)


def _has_body(environ: WSGIEnvironment) -> bool:
    """HTTP/1.1 framing: without a Content-Length above 0 or a Transfer-Encoding, a request has no body, and
    gunicorn reads it as empty at once. Such requests (every read of the read API) need no watch."""
    return environ.get("CONTENT_LENGTH", "") not in ("", "0") or "HTTP_TRANSFER_ENCODING" in environ


class _WatchedInput:
    def __init__(self, stream: Any, watch: Watch) -> None:
        self._stream = stream
        self._watch = watch

    def read(self, size: int = -1) -> bytes:
        return self._checked(self._stream.read, size)

    def readline(self, size: int = -1) -> bytes:
        return self._checked(self._stream.readline, size)

    def _checked(self, read: Any, size: int) -> bytes:
        if self._watch.expired:
            raise BodyTooSlow()
        try:
            data: bytes = read(size)
        except Exception:
            if self._watch.expired:  # the cut-off made the reader fail (a chunked body ends mid-chunk)
                raise BodyTooSlow() from None
            raise
        if self._watch.expired:  # the cut-off ended the read early: what came is not the whole body
            raise BodyTooSlow()
        return data
