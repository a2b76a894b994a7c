"""The web process's one `LISTEN access_feed` connection, shared by every long poll waiting in it.

Writers `NOTIFY access_feed, '<last cursor>'` in the transaction that numbers their changes (store/feed.py):
PostgreSQL delivers it at COMMIT, so a poll woken by it finds the changes committed. One thread reads the
notifications and wakes the waiting requests (a Condition); none of them holds a database connection while
it waits. If the connection drops (the database restarted, a failover), the thread reconnects with a pause,
and meanwhile, and once after each reconnect (notifications sent while away are lost), waiters look again
by themselves.
"""

from __future__ import annotations

import threading
from typing import Any

import psycopg
from sqlalchemy import make_url

from .db import KEEPALIVES
from .logs import get_logger
from .store.feed import CHANNEL

log = get_logger(__name__)

APPLICATION_NAME = "entitlement-sync-feed-listener"


class PostgresFeedListener:
    def __init__(
        self,
        database_url: str,
        *,
        reconnect_pause: float = 1.0,
        safety_interval: float = 5.0,
        poll_while_down: float = 0.5,
        connect_timeout: int = 3,
    ) -> None:
        self._conninfo = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
        self._reconnect_pause = reconnect_pause
        self._safety_interval = safety_interval  # even with no notification, waiters look again this often
        self._poll_while_down = poll_while_down
        self._connect_timeout = connect_timeout
        self._changed = threading.Condition()
        self._latest = 0  # the last cursor notified
        self._generation = 0  # grows at each (re)connect and disconnect: waiters look again
        self._connected = False
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    @property
    def connected(self) -> bool:
        return self._connected

    def wait_past(self, cursor: int, timeout: float) -> None:
        self._ensure_started()
        with self._changed:
            if not self._connected:
                self._changed.wait(min(timeout, self._poll_while_down))
                return
            generation = self._generation
            self._changed.wait_for(
                lambda: self._latest > cursor or self._generation != generation or self._stopping.is_set(),
                timeout=min(timeout, self._safety_interval),
            )

    def close(self) -> None:
        self._stopping.set()
        with self._changed:
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _ensure_started(self) -> None:
        # Lazily, in the process that serves requests: gunicorn forks its workers, threads do not survive it.
        if self._thread is not None and self._thread.is_alive():
            return
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="feed-listener", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._listen()
            except Exception as error:  # a restart, a failover, a network cut: try again shortly
                log.warning("feed.listener_disconnected", error=str(error).splitlines()[0] if str(error) else "")
            self._moved(connected=False)
            self._stopping.wait(self._reconnect_pause)

    def _listen(self) -> None:
        options: dict[str, Any] = {
            "connect_timeout": self._connect_timeout,
            "application_name": APPLICATION_NAME,
            **KEEPALIVES,
        }
        with psycopg.connect(self._conninfo, autocommit=True, **options) as connection:
            connection.execute(f"LISTEN {CHANNEL}")
            self._moved(connected=True)
            while not self._stopping.is_set():
                for notification in connection.notifies(timeout=1.0):
                    self._notified(notification.payload)

    def _notified(self, payload: str) -> None:
        try:
            cursor = int(payload)
        except ValueError:
            return
        with self._changed:
            # Payloads grow (cursors are numbered in commit order, NOTIFY is delivered in commit order); taking
            # the last rather than the largest also heals after the database was restored to a lower cursor.
            self._latest = cursor
            self._changed.notify_all()

    def _moved(self, *, connected: bool) -> None:
        with self._changed:
            self._connected = connected
            self._generation += 1
            self._changed.notify_all()
