"""The bare reference for feed latency: one INSERT + NOTIFY per transaction, and one connection LISTENing.

What is left when the feed's own work (numbering under a lock, the HTTP long poll, the JSON, the client's
apply) is taken away: PostgreSQL's notification delivery, from a COMMIT to a listener on the same host.
"""

from __future__ import annotations

import threading
import time

import psycopg

SCHEMA = "CREATE TABLE IF NOT EXISTS bare_feed (id bigserial PRIMARY KEY, customer_id text NOT NULL, granted bool)"


class BareListener:
    """A LISTEN loop in a thread: records when each payload arrived (perf_counter)."""

    def __init__(self, dsn: str, channel: str = "bare_feed") -> None:
        self.received: dict[str, float] = {}
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._dsn, self._channel = dsn, channel
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        with psycopg.connect(self._dsn, autocommit=True) as connection:
            connection.execute(f"LISTEN {self._channel}")
            self._ready.set()
            while not self._stopping.is_set():
                for notification in connection.notifies(timeout=0.5):
                    self.received[notification.payload] = time.perf_counter()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(5)


def write(connection: psycopg.Connection, customer: str, granted: bool, token: str, channel: str = "bare_feed") -> None:
    """One transaction: the row and its notification."""
    with connection.transaction():
        connection.execute("INSERT INTO bare_feed (customer_id, granted) VALUES (%s, %s)", (customer, granted))
        connection.execute("SELECT pg_notify(%s, %s)", (channel, token))
