"""Use cases over the inbox for operators: list, show, replay (and wait for the outcome)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from . import store
from .db import SessionFactory, transaction
from .errors import InvalidWebhook
from .events import event_from_payload
from .logs import get_logger
from .models import UNFINISHED, EventStatus
from .ports import Clock, Sleep, StuckRule
from .receive import Receiver
from .store.inbox import EventFilter

log = get_logger(__name__)

REPLAY_BATCH = 1000
REPLAYABLE: list[EventStatus] = [status for status in EventStatus if status != EventStatus.IGNORED]


@dataclass(frozen=True)
class EventSummary:
    id: str
    type: str
    customer_id: str | None
    status: str
    attempts: int
    created: int
    received_at: datetime
    status_changed_at: datetime
    last_error: str | None


@dataclass(frozen=True)
class AttemptRecord:
    started_at: datetime
    finished_at: datetime | None
    outcome: str | None
    error: str | None


@dataclass(frozen=True)
class EventDetail:
    event: EventSummary
    payload: dict[str, Any]
    processed_at: datetime | None
    attempts: list[AttemptRecord]


@dataclass(frozen=True)
class ReplayReport:
    queued: list[str] = field(default_factory=list)  # back on the job queue
    pending: list[str] = field(default_factory=list)  # reopened, but the broker refused: the sweep sends them
    skipped: dict[str, str] = field(default_factory=dict)  # event id -> why it was not replayed

    @property
    def taken(self) -> int:
        return len(self.queued) + len(self.pending) + len(self.skipped)


def summary_of(row: Any) -> EventSummary:
    return EventSummary(
        row.id,
        row.type,
        row.customer_id,
        row.status,
        row.attempts,
        row.created,
        row.received_at,
        row.status_changed_at,
        row.last_error,
    )


def _logged(report: ReplayReport, dry_run: bool) -> ReplayReport:
    log.info(
        "events.replayed",
        queued=len(report.queued),
        pending=len(report.pending),
        skipped=len(report.skipped),
        dry_run=dry_run,
    )
    return report


class Inbox:
    def __init__(
        self,
        new_session: SessionFactory,
        receiver: Receiver,
        clock: Clock,
        stuck: StuckRule,
        sleep: Sleep = time.sleep,
    ) -> None:
        self._new_session = new_session
        self._receiver = receiver
        self._clock = clock
        self._stuck = stuck
        self._sleep = sleep

    def list_events(self, where: EventFilter) -> list[EventSummary]:
        """Inbox rows, newest first; status "stuck" means what the sweep would hand to a worker again."""
        with self._new_session() as session:
            return [summary_of(row) for row in store.inbox.find_events(session, where, self._clock(), self._stuck)]

    def show_event(self, event_id: str) -> EventDetail | None:
        with self._new_session() as session:
            row = store.inbox.get_event(session, event_id)
            if row is None:
                return None
            attempts = [
                AttemptRecord(a.started_at, a.finished_at, a.outcome, a.error)
                for a in store.inbox.attempts_of(session, event_id)
            ]
            return EventDetail(summary_of(row), row.payload, row.processed_at, attempts)

    def replay(self, event_ids: Sequence[str], *, dry_run: bool = False) -> ReplayReport:
        """Put events back through processing, the same way as a webhook: reopen, commit, then enqueue.

        Replaying a processed event is harmless: the sync re-reads Stripe and changes nothing if nothing
        changed. An ignored event is checked again against today's settings (say STRIPE_API_KEY was of the
        wrong mode): replayed if it would now be accepted, else skipped with the reason.
        """
        report = ReplayReport()
        unique = list(dict.fromkeys(event_ids))
        for start in range(0, len(unique), REPLAY_BATCH):
            self._replay_batch(unique[start : start + REPLAY_BATCH], report, dry_run)
        return _logged(report, dry_run)

    def replay_failed(
        self, since: datetime | None, event_type: str | None, *, limit: int | None = None, dry_run: bool = False
    ) -> ReplayReport:
        """Replay failed events (oldest id first), a batch at a time: one read, one update and one commit per
        batch, then its jobs; so 100,000 of them take seconds and never one huge statement."""
        report, after = ReplayReport(), ""
        while limit is None or report.taken < limit:
            size = REPLAY_BATCH if limit is None else min(REPLAY_BATCH, limit - report.taken)
            with self._new_session() as session:
                event_ids = store.inbox.failed_event_ids(session, since, event_type, after=after, limit=size)
            if not event_ids:
                break
            after = event_ids[-1]
            if dry_run:
                report.queued.extend(event_ids)
            else:
                self._reopen_and_enqueue(event_ids, report, [EventStatus.FAILED])
        return _logged(report, dry_run)

    def _replay_batch(self, event_ids: list[str], report: ReplayReport, dry_run: bool) -> None:
        with self._new_session() as session:
            rows = store.inbox.events_by_id(session, event_ids)
        plain: list[str] = []
        for event_id in event_ids:
            row = rows.get(event_id)
            if row is None:
                report.skipped[event_id] = "not in the inbox (try `events recover`)"
            elif row.status != EventStatus.IGNORED:
                plain.append(event_id)
            elif reason := self._still_ignored(row.payload):
                report.skipped[event_id] = f"ignored: {reason}"
            elif dry_run:
                report.queued.append(event_id)
            else:
                self._reopen_ignored(event_id, report)
        if dry_run:
            report.queued.extend(plain)
        else:
            self._reopen_and_enqueue(plain, report, REPLAYABLE)

    def _still_ignored(self, payload: dict[str, Any]) -> str | None:
        try:
            return self._receiver.reason_to_ignore(event_from_payload(payload))
        except InvalidWebhook as error:
            return str(error)

    def _reopen_and_enqueue(self, event_ids: list[str], report: ReplayReport, only_from: Sequence[EventStatus]) -> None:
        if not event_ids:
            return
        with transaction(self._new_session) as session:
            reopened = store.inbox.reopen_events(session, event_ids, self._clock(), only_from)
        for event_id in event_ids:
            if event_id not in reopened:
                report.skipped[event_id] = "its status changed meanwhile; try again"
        self._enqueue([event_id for event_id in event_ids if event_id in reopened], report)

    def _reopen_ignored(self, event_id: str, report: ReplayReport) -> None:
        with transaction(self._new_session) as session:
            reopened = store.inbox.reopen_ignored_event(session, event_id, self._clock())
        if reopened:
            self._enqueue([event_id], report)
        else:
            report.skipped[event_id] = "its status changed meanwhile; try again"

    def _enqueue(self, event_ids: list[str], report: ReplayReport) -> None:
        if report.pending:  # the broker already refused: leave the rest to the sweep at once
            report.pending.extend(event_ids)
            return
        queued, pending = self._receiver.enqueue_many(event_ids)
        report.queued.extend(queued)
        report.pending.extend(pending)

    def wait_for(self, event_ids: Sequence[str], timeout: float, poll: float = 0.1) -> list[EventSummary]:
        """Poll the inbox until every event is finished or `timeout` seconds pass; returns their rows."""
        deadline = time.monotonic() + timeout
        while True:
            with self._new_session() as session:
                rows = store.inbox.events_by_id(session, list(event_ids))
            unfinished = [row for row in rows.values() if row.status in UNFINISHED]
            if not unfinished or time.monotonic() >= deadline:
                return [summary_of(rows[event_id]) for event_id in event_ids if event_id in rows]
            self._sleep(poll)
