"""gunicorn's home: server hooks and settings, loaded by `entitlement-sync serve`
(`--config python:entitlement_sync.gunicorn_hooks`), and the worker class it names (`--worker-class`)."""

from __future__ import annotations

import select
from typing import Any

from gunicorn.glogging import Logger
from gunicorn.http.body import LengthReader
from gunicorn.workers.gthread import ThreadWorker as ThreadWorkerBase

from .telemetry import process_exited

WEBHOOK_PATH = "/webhooks/stripe"
READ_API_PREFIX = "/v1/customers/"


def child_exit(server: Any, worker: Any) -> None:
    # A replaced web process's live gauges (the breaker state) must not outlive it; its counters stay.
    process_exited(worker.pid)


def logged_by_the_receiver(method: str, path: str, status: int | None) -> bool:
    """A webhook answered 200 or 400 already has its structured line (`webhook.duplicate|ignored|rejected|accepted`
    with the event id, or on PostgreSQL `webhooks.accepted` naming every event its writer stored and enqueued
    together): an access line beside it would double the log of the busiest path."""
    return method == "POST" and path == WEBHOOK_PATH and status in (200, 400)


def counted_by_the_read_api(method: str, path: str, status: int | None) -> bool:
    """A read answered 200 is counted in `read_api_duration_seconds` (by endpoint, status and time): a line
    for each, thousands a second from the services that ask, would cost a read a tenth of its CPU and say
    nothing the metric does not. Refusals and errors keep their line."""
    return method == "GET" and status == 200 and path.startswith(READ_API_PREFIX)


class AccessLog(Logger):  # type: ignore[misc]  # gunicorn is untyped
    """gunicorn's access log for every request but the webhooks the receiver logs itself and the reads the
    read API counts."""

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        status = getattr(resp, "status_code", None)
        if logged_by_the_receiver(req.method, req.path, status) or counted_by_the_read_api(
            req.method, req.path, status
        ):
            return
        super().access(resp, req, environ, request_time)


# How long a thread that has just answered on a kept-alive connection waits for that client's next request
# before handing the connection back to gunicorn's poller. A client that sends its next webhook at once (a
# busy sender, Stripe's retries, a load test) is served on by the same thread; an idle one costs the thread
# this long, once, and is then parked as gthread parks it.
NEXT_REQUEST_SECONDS = 0.002


class ThreadWorker(ThreadWorkerBase):  # type: ignore[misc]  # gunicorn is untyped
    """gunicorn's gthread worker, serving a kept-alive connection's next request in the thread that answered
    the last one while there are no more connections than threads.

    gthread hands every kept-alive connection back to its main thread after each answer: a wake-up through a
    pipe, an epoll registration, and, when the next request arrives, a hand-off to a pool thread again: about
    a fifth of a webhook's interpreter time in py-spy under wrk c16, and two thread switches. Above one
    connection per thread the threads are shared as gthread shares them, so a connection never waits for a
    thread held by another one's next request; a slow client still holds one thread at most, for the same
    deadlines as before (web/slow_clients.py)."""

    def _keepalive_after(self, conn: Any, keepalive: bool) -> bool:
        # gunicorn drains what the app left of a body before the next request, twice (here under a deadline, and
        # as the parser starts the next one), each time setting a socket timeout and resetting it: system calls,
        # each a moment when another thread takes the interpreter. A body read to its end (a webhook's always is)
        # leaves nothing to drain.
        if keepalive and drained_already(conn):
            return True
        return bool(super()._keepalive_after(conn, keepalive))

    def handle(self, conn: Any) -> Any:
        kept = super().handle(conn)
        # nr_conns is the main thread's count, read here without its lock: a stale value only moves the moment
        # at which this connection goes back to the poller by one request.
        while kept is True and self.alive and self.nr_conns <= self.cfg.threads and _next_request(conn):
            kept = super().handle(conn)
        return kept


def _next_request(conn: Any) -> bool:
    """Whether the connection's next request has begun to arrive (already read ahead, or readable soon)."""
    if conn.parser.unreader.buf.getvalue():
        return True
    poller = select.poll()
    poller.register(conn.sock, select.POLLIN)
    return bool(poller.poll(NEXT_REQUEST_SECONDS * 1000))


def drained_already(conn: Any) -> bool:
    """For a kept-alive connection: when its request's body was read to its end, tell its parser (as its drain
    would) that the request is done with, and say so."""
    if not _body_read_to_its_end(conn):
        return False
    # The parser's next step, with the request forgotten: no drain (nor its timeout), and no check of whether
    # the request asked to close, which the answer's keep-alive already took into account.
    conn.parser.mesg = None
    return True


def _body_read_to_its_end(conn: Any) -> bool:
    """Whether the request's body of stated length was read whole, none of it held back (what gunicorn's drain,
    `Parser.finish_body`, would find at once)."""
    body = getattr(getattr(conn.parser, "mesg", None), "body", None)
    reader = getattr(body, "reader", None)
    return (
        isinstance(reader, LengthReader)
        and reader.length == 0
        and getattr(body, "failed", True) is False
        and not body.buf.getvalue()  # type: ignore[union-attr]  # a Body, since its reader is
    )


logger_class = AccessLog
