"""The end of an event's attempt: its status written in the attempt's transaction, and told (logs, telemetry)
only after the commit. Every way `Syncer.process_event` ends goes through here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session

from . import store
from .db import SessionFactory, transaction
from .logs import get_logger
from .models import EventStatus, StripeEvent
from .ports import Clock, Telemetry, WaitRule
from .store._sql import WithParts
from .store.attempts import Unavailability
from .writing import SyncResult

log = get_logger(__name__)


@dataclass(frozen=True)
class _Finished:
    event: StripeEvent
    status: EventStatus  # the status the attempt set, or would have set had it still owned the event


@dataclass(frozen=True)
class Outcome:
    event_id: str
    status: EventStatus | None  # None: not claimed, because the event is already finished or unknown
    error: str | None = None
    sync: SyncResult | None = None
    finished: _Finished | None = field(default=None, repr=False, compare=False)  # for telling it after the commit


class Finisher:
    def __init__(self, new_session: SessionFactory, clock: Clock, wait: WaitRule, telemetry: Telemetry) -> None:
        self._new_session = new_session
        self._clock = clock
        self._wait = wait
        self._telemetry = telemetry

    def finish(
        self,
        event: StripeEvent,
        attempt_id: int,
        status: EventStatus,
        error: str | None,
        unavailable: Unavailability | None = None,
        now: datetime | None = None,
    ) -> Outcome:
        """Finish the attempt in a transaction of its own, and tell it."""
        with transaction(self._new_session) as session:
            outcome = self.finish_in(session, event, attempt_id, status, error, unavailable, now)
        return self.reported(outcome)

    def finish_in(
        self,
        session: Session,
        event: StripeEvent,
        attempt_id: int,
        status: EventStatus,
        error: str | None,
        unavailable: Unavailability | None = None,
        now: datetime | None = None,
        *,
        last: bool = False,
    ) -> Outcome:
        """Finish the attempt in the caller's transaction; the outcome is told (`reported`) after the commit.
        `last`: the caller commits right after, and the COMMIT may go with the finish (`_sql.pg_rows`)."""
        now = now or self._clock()
        if status in (EventStatus.FAILED, EventStatus.WAITING) and _seen_by_applied_fetch(session, event):
            status = EventStatus.SUPERSEDED  # a later fetch was applied while this attempt ran
        owned = store.attempts.finish_attempt(
            session, event.id, attempt_id, status, error, now, unavailable=unavailable, last=last
        )
        return Outcome(event.id, status if owned else None, error, finished=_Finished(event, status))

    def processed_with_write(self, session: Session, event: StripeEvent, attempt_id: int) -> WithParts | None:
        """PostgreSQL: the attempt's finish as processed, as parts of the write that processes the event (one
        statement); `outcome_of` reads its answer. None elsewhere: `finish_in` after the write."""
        return store.attempts.finish_parts(session, event.id, attempt_id, EventStatus.PROCESSED, None, self._clock())

    def outcome_of(self, parts: WithParts, event: StripeEvent) -> Outcome:
        """The outcome of a finish as processed sent with a write (`processed_with_write`)."""
        status = EventStatus.PROCESSED
        return Outcome(event.id, status if parts.answer else None, None, finished=_Finished(event, status))

    def unavailable(self, event: StripeEvent, retry_at: datetime | None = None) -> Unavailability:
        since = event.unavailable_since or self._clock()
        return Unavailability(since, event.waits + (retry_at is not None), retry_at)

    def wait_or_fail(self, event: StripeEvent, attempt_id: int, error: str) -> Outcome:
        """Stripe is unavailable and the queue's retries are spent: wait for the sweep, with a pause that
        doubles each time, until Stripe has been unavailable for this event longer than the window."""
        now = self._clock()
        since = event.unavailable_since or now
        if now - since >= self._wait.give_up_after:
            error = (
                f"{error} (Stripe unavailable since {since:%Y-%m-%d %H:%M:%S} UTC: past RETRY_UNAVAILABLE_FOR_SECONDS)"
            )
            return self.finish(event, attempt_id, EventStatus.FAILED, error, self.unavailable(event))
        retry_at = now + self._wait.pause(event.waits)
        return self.finish(event, attempt_id, EventStatus.WAITING, error, self.unavailable(event, retry_at), now)

    def reported(self, outcome: Outcome) -> Outcome:
        """Log and count a committed finish; an event processed is an applied change (freshness)."""
        finished = outcome.finished
        if finished is None:
            return outcome
        event, status = finished.event, finished.status
        first_line = (outcome.error or "").split("\n")[0] or None
        if outcome.status is None:
            log.info("event.overtaken", event_id=event.id, status=status, error=first_line)
            return outcome
        label = "retrying" if status == EventStatus.QUEUED else str(status)
        self._telemetry.event_finished(event.type, label)
        log.info("event.finished", event_id=event.id, status=status, outcome=label, error=first_line)
        if status == EventStatus.PROCESSED:
            # The table now holds a state at least as new as the event, whether written now or earlier.
            now = self._clock()
            self._telemetry.change_applied(now.timestamp() - event.created, (now - event.received_at).total_seconds())
        return outcome


def _seen_by_applied_fetch(session: Session, event: StripeEvent) -> bool:
    """True when a fetch that started after the event was stored has been applied: its effect is in the table.

    (A fetch applied concurrently with this check is caught by the sweep's `supersede_synced` pass.)
    """
    if event.customer_id is None or event.customer_seq is None:
        return False
    return store.sync_state.applied_seq(session, event.customer_id) > event.customer_seq
