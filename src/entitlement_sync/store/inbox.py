"""The inbox (`stripe_events`, `event_attempts`): storing and finding Stripe events. Claiming and finishing
them (the worker's side) is in `attempts.py`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, and_, bindparam, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ..events import InboundEvent
from ..models import UNFINISHED, CustomerSyncState, EventAttempt, EventStatus, StripeEvent
from ..ports import StuckRule
from ._sql import dialect_of, pg_rows, rows_changed
from .sync_state import advance_customer_seq


def store_event_if_new(
    session: Session, event: InboundEvent, status: EventStatus, note: str | None, now: datetime, *, sequenced: bool
) -> bool:
    """Store the event unless its id is already there; True when this call stored it.

    `sequenced`: also advance its customer's sequence and record the value on the event (a fetch that takes a
    later ticket saw this event). Portable, in up to three statements; PostgreSQL's receiver sends the same as
    one (`inbox_batch.store_events_together`).
    """
    values = _row(event, status, note, now)
    if session.execute(_insert_statement(session.get_bind().dialect.name), values).first() is None:
        return False
    if sequenced and event.customer_id:
        set_customer_seq(session, event.id, advance_customer_seq(session, event.customer_id))
    return True


def _row(event: InboundEvent, status: EventStatus, note: str | None, now: datetime) -> dict[str, Any]:
    """The bound values of both ways to store an event."""
    return {
        "id": event.id,
        "type": event.type,
        "customer_id": event.customer_id,
        "livemode": event.livemode,
        "created": event.created,
        "payload": event.payload,
        "status": status,
        "note": note,
        "now": now,
    }


@cache
def _insert_statement(dialect_name: str) -> Any:
    """Built once per dialect with bound parameters, so SQLAlchemy compiles it once and then only binds."""
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    events = cast(Table, StripeEvent.__table__)
    statement = dialect.insert(events).values(
        id=bindparam("id"),
        type=bindparam("type"),
        customer_id=bindparam("customer_id"),
        livemode=bindparam("livemode"),
        created=bindparam("created"),
        payload=bindparam("payload", type_=events.c.payload.type),
        status=bindparam("status"),
        attempts=0,
        last_error=bindparam("note"),
        received_at=bindparam("now"),
        status_changed_at=bindparam("now"),
    )
    # rowcount is not reliable for INSERT on every driver; RETURNING is.
    return statement.on_conflict_do_nothing(index_elements=["id"]).returning(events.c.id)


def insert_event_if_new(
    session: Session, event: InboundEvent, status: EventStatus, note: str | None, now: datetime
) -> bool:
    """Store the event unless its id is already there, without touching its customer's sequence."""
    return store_event_if_new(session, event, status, note, now, sequenced=False)


def set_customer_seq(session: Session, event_id: str, seq: int) -> None:
    session.execute(update(StripeEvent).where(StripeEvent.id == event_id).values(customer_seq=seq))


def customer_of(session: Session, event_id: str) -> str | None:
    """The event's customer, read without a lock: the worker takes the customer's lock before claiming."""
    if dialect_of(session) == "postgresql":
        rows = pg_rows(session, "SELECT customer_id FROM stripe_events WHERE id = %(event)s", {"event": event_id})
        return rows[0][0] if rows else None
    return session.connection().execute(_CUSTOMER_OF, {"event": event_id}).scalar()


_CUSTOMER_OF = select(StripeEvent.customer_id).where(StripeEvent.id == bindparam("event"))


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


def supersede_synced(session: Session, now: datetime, customer_id: str | None = None) -> int:
    """Mark `superseded` every failed or waiting event whose customer was since synced by a fetch that started
    after the event was stored (its `customer_seq` is below the customer's `applied_seq`): its effect is in the
    access table, so it needs no retry and no alert."""
    applied = (
        select(CustomerSyncState.applied_seq)
        .where(CustomerSyncState.customer_id == StripeEvent.customer_id)
        .scalar_subquery()
    )
    statement = update(StripeEvent).where(
        StripeEvent.status.in_((EventStatus.FAILED, EventStatus.WAITING)),
        StripeEvent.customer_seq.is_not(None),
        StripeEvent.customer_seq < applied,
    )
    if customer_id is not None:
        statement = statement.where(StripeEvent.customer_id == customer_id)
    values = {"status": EventStatus.SUPERSEDED, "status_changed_at": now, "retry_at": None}
    return rows_changed(session, statement.values(**values).execution_options(synchronize_session=False))


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


def is_due(now: datetime) -> ColumnElement[bool]:
    """Waiting for Stripe, and its pause is over: the sweep hands it to a worker again. Not "stuck"."""
    return and_(StripeEvent.status == EventStatus.WAITING, StripeEvent.retry_at <= now)


def event_ids_to_requeue(session: Session, now: datetime, rule: StuckRule, limit: int = 1000) -> list[str]:
    """What the sweep hands to a worker again: the stuck, and the waiting whose time has come."""
    statement = select(StripeEvent.id).where(or_(is_stuck(now, rule), is_due(now)))
    return list(session.scalars(statement.order_by(StripeEvent.received_at).limit(limit)))


def count_stuck(session: Session, now: datetime, rule: StuckRule) -> int:
    return int(session.scalar(select(func.count()).select_from(StripeEvent).where(is_stuck(now, rule))) or 0)


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


def failed_event_ids(
    session: Session, since: datetime | None, event_type: str | None, *, after: str = "", limit: int = 1000
) -> list[str]:
    """One page of failed events, in id order after `after`: a keyset, so a replay of 100,000 reads them in
    pages and never revisits an event that failed again meanwhile."""
    statement = select(StripeEvent.id).where(StripeEvent.status == EventStatus.FAILED, StripeEvent.id > after)
    if since:
        statement = statement.where(StripeEvent.received_at >= since)
    if event_type:
        statement = statement.where(StripeEvent.type == event_type)
    return list(session.scalars(statement.order_by(StripeEvent.id).limit(limit)))


_REOPENED = {
    "status": EventStatus.RECEIVED,
    "claimed_by": None,  # an attempt still running loses the event: the replay's job decides its outcome
    "unavailable_since": None,  # a fresh start: the operator decided to try again
    "waits": 0,
    "retry_at": None,
}


def reopen_events(session: Session, event_ids: Sequence[str], now: datetime, only_from: Iterable[str]) -> set[str]:
    """Put these events back to `received` (to be enqueued) if their status is one of `only_from`; returns the
    ids it reopened. One statement per call: callers pass batches."""
    statement = (
        update(StripeEvent)
        .where(StripeEvent.id.in_(list(event_ids)), StripeEvent.status.in_(list(only_from)))
        .values(**_REOPENED, status_changed_at=now)
        .returning(StripeEvent.id)
        .execution_options(synchronize_session=False)
    )
    return set(session.scalars(statement))


def reopen_ignored_event(session: Session, event_id: str, now: datetime) -> bool:
    """Put an ignored event back to `received`, once the caller re-checked it would now be accepted."""
    statement = update(StripeEvent).where(StripeEvent.id == event_id, StripeEvent.status == EventStatus.IGNORED)
    # The reason it was ignored no longer holds.
    return rows_changed(session, statement.values(**_REOPENED, status_changed_at=now, last_error=None)) == 1


def mark_queued(session: Session, event_ids: Sequence[str], now: datetime) -> None:
    """Only from received: a fast worker may already have moved them on."""
    statement = update(StripeEvent).where(
        StripeEvent.id.in_(list(event_ids)), StripeEvent.status == EventStatus.RECEIVED
    )
    session.execute(statement.values(status=EventStatus.QUEUED, status_changed_at=now))


def events_by_id(session: Session, event_ids: Sequence[str]) -> dict[str, StripeEvent]:
    found: dict[str, StripeEvent] = {}
    for start in range(0, len(event_ids), 500):  # SQLite caps the number of bound parameters
        chunk = list(event_ids[start : start + 500])
        found.update((row.id, row) for row in session.scalars(select(StripeEvent).where(StripeEvent.id.in_(chunk))))
    return found


def oldest_unfinished_received_at(session: Session) -> datetime | None:
    return session.scalar(select(func.min(StripeEvent.received_at)).where(StripeEvent.status.in_(UNFINISHED)))
