"""The inbox over time (`stripe_events`, `event_attempts`): per-minute counts and processing times for the ops
console's overview. Read-only.

Every query here is bounded by `status_changed_at >= since` on every status, so that it walks the
(status, status_changed_at) index instead of the whole inbox: any event received, processed or attempted
since then has changed status since then too (its status_changed_at is never older than those moments).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from ..models import EventAttempt, EventStatus, StripeEvent

_MINUTE_FORMAT = "%Y-%m-%d %H:%M"


def _touched_since(since: datetime) -> ColumnElement[bool]:
    return StripeEvent.status.in_(list(EventStatus)) & (StripeEvent.status_changed_at >= since)


def _minute_of(session: Session, column: Any) -> Any:
    """The UTC minute of a timestamp as text ("2026-11-24 10:07"), in the session's SQL dialect."""
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD HH24:MI")
    return func.strftime(_MINUTE_FORMAT, column)  # SQLite keeps UTC, naive


def _by_minute(session: Session, statement: Any) -> dict[datetime, int]:
    return {
        datetime.strptime(minute, _MINUTE_FORMAT).replace(tzinfo=UTC): int(count)
        for minute, count in session.execute(statement)
    }


def received_per_minute(session: Session, since: datetime) -> dict[datetime, int]:
    minute = _minute_of(session, StripeEvent.received_at)
    statement = select(minute, func.count()).where(_touched_since(since), StripeEvent.received_at >= since)
    return _by_minute(session, statement.group_by(minute))


def processed_per_minute(session: Session, since: datetime) -> dict[datetime, int]:
    minute = _minute_of(session, StripeEvent.processed_at)
    statement = select(minute, func.count()).where(
        StripeEvent.status == EventStatus.PROCESSED, StripeEvent.status_changed_at >= since
    )
    return _by_minute(session, statement.group_by(minute))


def attempts_per_minute(session: Session, since: datetime) -> dict[datetime, int]:
    """Processing attempts started per minute: each one asks Stripe at least once, unless coalesced."""
    minute = _minute_of(session, EventAttempt.started_at)
    statement = (
        select(minute, func.count())
        .join(StripeEvent, StripeEvent.id == EventAttempt.event_id)
        .where(_touched_since(since), EventAttempt.started_at >= since)
    )
    return _by_minute(session, statement.group_by(minute))


def rate_limited_attempts(session: Session, since: datetime) -> int:
    """Attempts since then that Stripe answered 429 (the gateway writes "HTTP 429" into the error)."""
    statement = (
        select(func.count())
        .select_from(EventAttempt)
        .join(StripeEvent, StripeEvent.id == EventAttempt.event_id)
        .where(_touched_since(since), EventAttempt.started_at >= since, EventAttempt.error.like("%HTTP 429%"))
    )
    return int(session.scalar(statement) or 0)


def failed_since(session: Session, since: datetime) -> int:
    statement = select(func.count()).where(
        StripeEvent.status == EventStatus.FAILED, StripeEvent.status_changed_at >= since
    )
    return int(session.scalar(statement) or 0)


def processing_times(session: Session, since: datetime, limit: int = 5000) -> list[tuple[int, datetime, datetime]]:
    """(Stripe's `created`, received_at, processed_at) of the events processed since then, newest first."""
    statement = (
        select(StripeEvent.created, StripeEvent.received_at, StripeEvent.processed_at)
        .where(StripeEvent.status == EventStatus.PROCESSED, StripeEvent.status_changed_at >= since)
        .order_by(StripeEvent.status_changed_at.desc())
        .limit(limit)
    )
    return [(created, received, processed) for created, received, processed in session.execute(statement) if processed]


def last_processed_at(session: Session) -> datetime | None:
    statement = select(func.max(StripeEvent.status_changed_at)).where(StripeEvent.status == EventStatus.PROCESSED)
    return session.scalar(statement)


def recent_failures(session: Session, limit: int = 5) -> list[StripeEvent]:
    statement = select(StripeEvent).where(StripeEvent.status == EventStatus.FAILED)
    return list(session.scalars(statement.order_by(StripeEvent.status_changed_at.desc()).limit(limit)))
