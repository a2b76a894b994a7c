"""The inbox (`stripe_events`, `event_attempts`): storing, claiming, finishing and finding Stripe events."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.orm import Session

from ..events import InboundEvent
from ..models import UNFINISHED, EventAttempt, EventStatus, StripeEvent
from ..ports import StuckRule
from ._sql import rows_changed, upsert


def insert_event_if_new(
    session: Session, event: InboundEvent, status: EventStatus, note: str | None, now: datetime
) -> bool:
    """Store the event unless its id is already there; True when this call stored it."""
    statement = (
        upsert(session, StripeEvent)
        .values(
            id=event.id,
            type=event.type,
            customer_id=event.customer_id,
            livemode=event.livemode,
            created=event.created,
            payload=event.payload,
            status=status,
            attempts=0,
            last_error=note,
            received_at=now,
            status_changed_at=now,
        )
        .on_conflict_do_nothing(index_elements=["id"])
        .returning(StripeEvent.id)  # rowcount is not reliable for INSERT on every driver; RETURNING is
    )
    return session.execute(statement).first() is not None


def set_customer_seq(session: Session, event_id: str, seq: int) -> None:
    session.execute(update(StripeEvent).where(StripeEvent.id == event_id).values(customer_seq=seq))


def get_event(session: Session, event_id: str) -> StripeEvent | None:
    return session.get(StripeEvent, event_id)


def set_status(
    session: Session,
    event_id: str,
    status: EventStatus,
    now: datetime,
    *,
    only_from: Iterable[EventStatus] | None = None,
) -> bool:
    statement = update(StripeEvent).where(StripeEvent.id == event_id)
    if only_from is not None:
        statement = statement.where(StripeEvent.status.in_(list(only_from)))
    return rows_changed(session, statement.values(status=status, status_changed_at=now)) == 1


def claim_for_processing(session: Session, event_id: str, now: datetime) -> tuple[StripeEvent, int] | None:
    """Mark the event processing and open an attempt; None when it is finished or unknown."""
    claimed = rows_changed(
        session,
        update(StripeEvent)
        .where(StripeEvent.id == event_id, StripeEvent.status.in_(UNFINISHED))
        .values(status=EventStatus.PROCESSING, attempts=StripeEvent.attempts + 1, status_changed_at=now),
    )
    if not claimed:
        return None
    attempt = EventAttempt(event_id=event_id, started_at=now)
    session.add(attempt)
    session.flush()
    event = session.get(StripeEvent, event_id)
    assert event is not None
    return event, attempt.id


def finish_attempt(
    session: Session, event_id: str, attempt_id: int, status: EventStatus, error: str | None, now: datetime
) -> None:
    values: dict[str, Any] = {"status": status, "status_changed_at": now}
    if status == EventStatus.PROCESSED:
        values["processed_at"] = now
    if error is not None or status == EventStatus.PROCESSED:
        values["last_error"] = error
    session.execute(update(StripeEvent).where(StripeEvent.id == event_id).values(**values))
    session.execute(
        update(EventAttempt).where(EventAttempt.id == attempt_id).values(finished_at=now, outcome=status, error=error)
    )


def is_stuck(now: datetime, rule: StuckRule) -> ColumnElement[bool]:
    """The one definition of "stuck": never enqueued past the receiver's grace (the broker was down), or queued
    or processing past the timeout (a lost job, a killed worker). The sweep hands exactly these to a worker
    again, and `events list --status stuck` shows exactly these."""
    never_enqueued = and_(
        StripeEvent.status == EventStatus.RECEIVED, StripeEvent.status_changed_at < now - rule.received_grace
    )
    abandoned = and_(
        StripeEvent.status.in_((EventStatus.QUEUED, EventStatus.PROCESSING)),
        StripeEvent.status_changed_at < now - rule.stuck_after,
    )
    return or_(never_enqueued, abandoned)


def stuck_event_ids(session: Session, now: datetime, rule: StuckRule, limit: int = 1000) -> list[str]:
    statement = select(StripeEvent.id).where(is_stuck(now, rule))
    return list(session.scalars(statement.order_by(StripeEvent.received_at).limit(limit)))


@dataclass(frozen=True)
class EventFilter:
    status: str | None = None  # an EventStatus, or "stuck"
    type: str | None = None
    customer_id: str | None = None
    since: datetime | None = None
    limit: int = 50


def find_events(session: Session, where: EventFilter, now: datetime, rule: StuckRule) -> list[StripeEvent]:
    statement = select(StripeEvent)
    if where.status == "stuck":
        statement = statement.where(is_stuck(now, rule))
    elif where.status:
        statement = statement.where(StripeEvent.status == where.status)
    if where.type:
        statement = statement.where(StripeEvent.type == where.type)
    if where.customer_id:
        statement = statement.where(StripeEvent.customer_id == where.customer_id)
    if where.since:
        statement = statement.where(StripeEvent.received_at >= where.since)
    statement = statement.order_by(StripeEvent.received_at.desc(), StripeEvent.id).limit(where.limit)
    return list(session.scalars(statement))


def attempts_of(session: Session, event_id: str) -> list[EventAttempt]:
    statement = select(EventAttempt).where(EventAttempt.event_id == event_id)
    return list(session.scalars(statement.order_by(EventAttempt.started_at, EventAttempt.id)))


def known_event_ids(session: Session, event_ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(event_ids), 500):
        chunk = list(event_ids[start : start + 500])
        found.update(session.scalars(select(StripeEvent.id).where(StripeEvent.id.in_(chunk))))
    return found


def failed_event_ids(session: Session, since: datetime | None, event_type: str | None) -> list[str]:
    statement = select(StripeEvent.id).where(StripeEvent.status == EventStatus.FAILED)
    if since:
        statement = statement.where(StripeEvent.received_at >= since)
    if event_type:
        statement = statement.where(StripeEvent.type == event_type)
    return list(session.scalars(statement.order_by(StripeEvent.received_at)))


def reopen_event(session: Session, event_id: str, now: datetime, *, was_ignored: bool = False) -> bool:
    """Put an event back to `received`, to be enqueued; an ignored one only once the caller re-checked it."""
    replayable = [status for status in EventStatus if status != EventStatus.IGNORED]
    statement = update(StripeEvent).where(StripeEvent.id == event_id)
    statement = statement.where(StripeEvent.status.in_([EventStatus.IGNORED] if was_ignored else replayable))
    values: dict[str, Any] = {"status": EventStatus.RECEIVED, "status_changed_at": now}
    if was_ignored:
        values["last_error"] = None  # the reason it was ignored no longer holds
    return rows_changed(session, statement.values(**values)) == 1


def events_by_id(session: Session, event_ids: Sequence[str]) -> dict[str, StripeEvent]:
    rows = session.scalars(select(StripeEvent).where(StripeEvent.id.in_(list(event_ids))))
    return {row.id: row for row in rows}


def oldest_unfinished_received_at(session: Session) -> datetime | None:
    return session.scalar(select(func.min(StripeEvent.received_at)).where(StripeEvent.status.in_(UNFINISHED)))
