"""Retention of the inbox: which events may be deleted, deleting them in batches, and the daily-run lease."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, delete, func, select, update
from sqlalchemy.orm import Session

from ..models import EventAttempt, PeriodicRun, StripeEvent
from ._sql import rows_changed, upsert


def prunable(statuses: Sequence[str], cutoff: datetime) -> ColumnElement[bool]:
    """Finished in one of `statuses`, and both received and created (by Stripe) before the cutoff: an event
    recovered today from 29 days ago stays, or `events recover` would take it for a new one."""
    return and_(
        StripeEvent.status.in_(list(statuses)),
        StripeEvent.received_at < cutoff,
        StripeEvent.created < int(cutoff.timestamp()),
    )


def count_prunable(session: Session, statuses: Sequence[str], cutoff: datetime) -> tuple[dict[str, int], int]:
    """(events by status, their attempts) that a prune with this cutoff would delete."""
    where = prunable(statuses, cutoff)
    by_status = session.execute(select(StripeEvent.status, func.count()).where(where).group_by(StripeEvent.status))
    attempts = session.scalar(
        select(func.count())
        .select_from(EventAttempt)
        .join(StripeEvent, EventAttempt.event_id == StripeEvent.id)
        .where(where)
    )
    return {status: int(count) for status, count in by_status}, int(attempts or 0)


def delete_prunable_batch(
    session: Session, statuses: Sequence[str], cutoff: datetime, batch_size: int
) -> tuple[dict[str, int], int]:
    """Delete up to `batch_size` prunable events and their attempts; returns (events by status, attempts).

    The rows are locked first (skipping any another transaction holds), so a replay cannot reopen an event
    between the choice and the delete.
    """
    chosen = session.execute(
        select(StripeEvent.id, StripeEvent.status)
        .where(prunable(statuses, cutoff))
        .order_by(StripeEvent.received_at)
        .limit(batch_size)
        .with_for_update(skip_locked=True)
    ).all()
    if not chosen:
        return {}, 0
    ids = [event_id for event_id, _ in chosen]
    attempts = rows_changed(session, delete(EventAttempt).where(EventAttempt.event_id.in_(ids)))
    rows_changed(session, delete(StripeEvent).where(StripeEvent.id.in_(ids)))
    by_status: dict[str, int] = {}
    for _, status in chosen:
        by_status[status] = by_status.get(status, 0) + 1
    return by_status, attempts


def claim_periodic_run(session: Session, name: str, every: timedelta, now: datetime) -> bool:
    """True for exactly one caller per period, across every process and host: the conditional UPDATE is
    the lease, so two workers waking at once cannot both win."""
    session.execute(
        upsert(session, PeriodicRun)
        .values(name=name, last_started_at=now - every - timedelta(seconds=1))
        .on_conflict_do_nothing(index_elements=["name"])
    )
    statement = (
        update(PeriodicRun)
        .where(PeriodicRun.name == name, PeriodicRun.last_started_at <= now - every)
        .values(last_started_at=now)
    )
    return rows_changed(session, statement) == 1
