"""A client-side deadline for every round trip to PostgreSQL.

PostgreSQL's `statement_timeout` needs a server that runs. A server that stops answering (frozen, swapped
out, behind a network that drops packets silently) leaves the client waiting on its socket forever: TCP
keepalives do not fire while the server's kernel still acknowledges, and a webhook would hang until
gunicorn kills its worker. So a watcher thread shuts down the socket of any call still waiting past its
deadline; the driver then fails the call as a lost connection, SQLAlchemy discards that connection, and
the caller sees the database as unavailable (a 503 for a webhook, a retry later for a worker).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from typing import Any

from sqlalchemy import Engine, event

from .forks import reset_in_forked_child
from .logs import get_logger

log = get_logger(__name__)


class StatementDeadline:
    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._armed: dict[int, tuple[float, Any]] = {}  # id(DBAPI connection): (deadline, DBAPI connection)
        self._changed = threading.Condition()
        self._watching = False  # this process's watcher runs (a forked child starts its own)
        self._wakes_at = 0.0  # when the watcher looks next (monotonic); 0: it is looking now
        reset_in_forked_child(self._forget_the_parents)

    def _forget_the_parents(self) -> None:
        # The parent's watcher did not come along, its calls are not ours, and its lock may have been held by
        # another of its threads at the fork.
        self._armed, self._changed, self._watching, self._wakes_at = {}, threading.Condition(), False, 0.0

    def attach(self, engine: Engine) -> None:
        event.listen(engine, "before_cursor_execute", self._on_cursor)
        event.listen(engine, "after_cursor_execute", self._off_cursor)
        event.listen(engine, "commit", self._on_connection)
        event.listen(engine, "rollback", self._on_connection)
        event.listen(engine.pool, "reset", self._on_pooled)
        event.listen(engine.pool, "checkin", self._off_pooled)

    def arm(self, dbapi_connection: Any) -> None:
        deadline = time.monotonic() + self._seconds
        with self._changed:
            self._armed[id(dbapi_connection)] = (deadline, dbapi_connection)
            if not self._watching:
                self._watching = True
                self._wakes_at = 0.0
                threading.Thread(target=self._watch, name="statement-deadline", daemon=True).start()
            # Wake the watcher only when it would look too late: every deadline is now + the same seconds, so
            # while any call is armed it already looks in time, and a round trip costs no thread switch.
            if deadline < self._wakes_at:
                self._wakes_at = 0.0
                self._changed.notify()

    def disarm(self, dbapi_connection: Any) -> None:
        with self._changed:
            self._armed.pop(id(dbapi_connection), None)

    def _on_cursor(self, _conn: Any, cursor: Any, *_args: Any) -> None:
        self.arm(cursor.connection)

    def _off_cursor(self, _conn: Any, cursor: Any, *_args: Any) -> None:
        self.disarm(cursor.connection)

    def _on_connection(self, conn: Any) -> None:
        # Armed until the connection is checked in, right after the COMMIT or ROLLBACK returns. A connection
        # already invalidated (a cut one, say) sends nothing: its rollback is local.
        if not conn.invalidated and not conn.closed:
            self.arm(conn.connection.dbapi_connection)

    def _on_pooled(self, dbapi_connection: Any, *_args: Any) -> None:
        self.arm(dbapi_connection)

    def _off_pooled(self, dbapi_connection: Any, *_args: Any) -> None:
        if dbapi_connection is not None:
            self.disarm(dbapi_connection)

    def _watch(self) -> None:
        while True:
            with self._changed:
                now = time.monotonic()
                expired = [(key, conn) for key, (deadline, conn) in self._armed.items() if deadline <= now]
                for key, _ in expired:
                    del self._armed[key]
                upcoming = [deadline for deadline, _ in self._armed.values()]
                if not expired:
                    self._wakes_at = min(upcoming, default=now + 60)
                    self._changed.wait(self._wakes_at - now)
                    self._wakes_at = 0.0
                    continue
            for _, conn in expired:
                _cut(conn)


def _cut(dbapi_connection: Any) -> None:
    """Shut down the connection's socket: the thread waiting on it wakes up with a lost connection."""
    try:
        fd = dbapi_connection.pgconn.socket  # psycopg 3; other drivers keep their own timeouts
    except Exception:  # closed meanwhile, or not psycopg: nothing to cut
        return
    log.warning("database.deadline_passed", action="connection cut")
    # A duplicate descriptor: shutting it down ends the connection for the driver's descriptor too.
    with socket.socket(fileno=os.dup(fd)) as duplicate, contextlib.suppress(OSError):  # OSError: already closed
        duplicate.shutdown(socket.SHUT_RDWR)
