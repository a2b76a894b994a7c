"""Use cases: publish access changes to other services: the feed (with long polls), the snapshot a new
consumer starts from, and pruning the feed.

A consumer takes `snapshot` (every page; the first page's cursor is where to start), then calls `changes`
with the last `next_cursor` for ever. Cursors are handed out in commit order (see store/feed.py), so a
consumer that applies every change in order ends with exactly `effective_access`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine

from . import policy, store
from .db import SessionFactory, outages_reported, transaction
from .errors import FeedCursorGone
from .logs import get_logger
from .models import AccessFeedEntry
from .ports import Clock, FeedWakeups, NoTelemetry, Telemetry

log = get_logger(__name__)

# A long poll holds a web thread (gunicorn's gthread workers: `serve --threads`, 8 by default) but no
# database connection. Capped under gunicorn's graceful timeout (20 s: a restart lets the waits finish) and
# proxies' idle timeouts; and at most half of a process's threads wait at once (the container passes
# `max_waiting`): the rest keep answering reads and probes.
MAX_WAIT_SECONDS = 15.0
MAX_LIMIT = 1000
MAX_SNAPSHOT_CUSTOMERS = 5000
PRUNE_SLICE = 10_000
PERIODIC_PRUNE_NAME = "feed-prune"
DAILY = timedelta(days=1)


@dataclass(frozen=True)
class FeedChange:
    cursor: int
    customer: str
    lookup_key: str
    change: str  # granted | revoked
    features: list[str]  # the feature ids the decision rests on; [] when none is known (a grant made here)
    at: datetime
    cause: str  # evt_… | override:N[:revoked|:expired] | grace:sub_… | catalog:sync | ops:… | clock


@dataclass(frozen=True)
class FeedPage:
    changes: list[FeedChange]
    next_cursor: int


@dataclass(frozen=True)
class SnapshotRow:
    customer: str
    lookup_key: str
    granted: bool
    features: list[str]


@dataclass(frozen=True)
class SnapshotPage:
    cursor: int  # this page is the state after every change up to this cursor, and none after it
    rows: list[SnapshotRow]
    next_after_customer: str | None  # None: this was the last page


class AccessFeed:
    def __init__(
        self,
        new_session: SessionFactory,
        engine: Engine,
        wakeups: FeedWakeups,
        clock: Clock,
        max_waiting: int,
        telemetry: Telemetry | None = None,
    ) -> None:
        self._new_session = new_session
        self._engine = engine
        self._wakeups = wakeups
        self._clock = clock
        self._waiting = threading.BoundedSemaphore(max(1, max_waiting))
        self.waiting = 0  # long polls waiting in this process now
        self._count_lock = threading.Lock()
        self._telemetry = telemetry or NoTelemetry()

    def changes(self, after: int, limit: int = 100, wait: float = 0.0) -> FeedPage:
        """The changes after cursor `after`, oldest first. With `wait`, returns as soon as there is one or
        the wait (capped at MAX_WAIT_SECONDS) is over. Raises FeedCursorGone for a cursor not kept."""
        limit = min(max(limit, 1), MAX_LIMIT)
        page = self._read(after, limit)
        if page.changes or wait <= 0:
            return page
        # Every waiting slot taken: answer at once rather than hold one more thread (the client backs off).
        if not self._waiting.acquire(blocking=False):
            self._telemetry.long_poll("refused")
            return page
        self._count(+1)
        try:
            deadline = time.monotonic() + min(wait, MAX_WAIT_SECONDS)
            while not page.changes and (remaining := deadline - time.monotonic()) > 0:
                self._wakeups.wait_past(after, remaining)
                page = self._read(after, limit)
            return page
        finally:
            self._count(-1)
            self._waiting.release()

    def _count(self, step: int) -> None:
        with self._count_lock:
            self.waiting += step
        self._telemetry.long_poll("waiting" if step > 0 else "done")

    def _read(self, after: int, limit: int) -> FeedPage:
        with outages_reported(), self._new_session() as session:
            last, pruned = store.feed.bounds(session)
            if after < pruned or after > last:
                raise FeedCursorGone(
                    f"cursor {after} is not kept (the feed holds {pruned + 1}..{last}): take a new snapshot"
                    " (GET /v1/access-snapshot) and follow the feed from its cursor"
                )
            entries = store.feed.entries_after(session, after, limit)
        changes = [_change(entry) for entry in entries]
        return FeedPage(changes, changes[-1].cursor if changes else after)

    def snapshot(self, after_customer: str = "", limit: int = 1000) -> SnapshotPage:
        """One page of the current state, by customer id: the rows of the next `limit` customers."""
        limit = min(max(limit, 1), MAX_SNAPSHOT_CUSTOMERS)
        with outages_reported(), self._engine.connect() as connection:
            cursor, rows = store.feed.snapshot_page(connection, after_customer, limit)
        customers = {row.customer_id for row in rows}
        return SnapshotPage(
            cursor,
            [
                SnapshotRow(row.customer_id, row.lookup_key, row.granted, policy.features_of(row.sources))
                for row in rows
            ],
            max(customers) if len(customers) == limit else None,
        )

    def bounds(self) -> tuple[int, int]:
        """(the last cursor handed out, the oldest cursor a consumer may resume from)."""
        with outages_reported(), self._new_session() as session:
            return store.feed.bounds(session)

    def prune(self, older_than: timedelta, slice_size: int = PRUNE_SLICE) -> int:
        """Delete the feed's entries older than this (the history in effective_access_changes stays).

        In slices of `slice_size` cursors, one short transaction each: a busy day is millions of entries, and
        an interrupted prune keeps what it did (`pruned_through` moves with each slice)."""
        with self._new_session() as session:
            through = store.feed.last_cursor_before(session, self._clock() - older_than)
            _, done = store.feed.bounds(session)
        deleted = 0
        while through is not None and done < through:
            done = min(done + slice_size, through)
            with transaction(self._new_session) as session:
                deleted += store.feed.prune_through(session, done)
        log.info("feed.pruned", entries=deleted, through=through)
        return deleted

    def prune_if_due(self, retention_days: int) -> int | None:
        """The workers' daily prune: runs in whichever process claims today's run first, None elsewhere."""
        with transaction(self._new_session) as session:
            due = store.retention.claim_periodic_run(session, PERIODIC_PRUNE_NAME, DAILY, self._clock())
        return self.prune(timedelta(days=retention_days)) if due else None

    def close(self) -> None:
        self._wakeups.close()


def _change(entry: AccessFeedEntry) -> FeedChange:
    return FeedChange(
        entry.cursor,
        entry.customer_id,
        entry.lookup_key,
        entry.change,
        list(entry.features or ()),
        entry.changed_at,
        entry.cause,
    )


class PollingWakeups:
    """SQLite (no LISTEN/NOTIFY): the caller looks again every `interval` seconds."""

    def __init__(self, interval: float = 0.2) -> None:
        self._interval = interval

    def wait_past(self, cursor: int, timeout: float) -> None:
        time.sleep(min(timeout, self._interval))

    def close(self) -> None:
        pass
