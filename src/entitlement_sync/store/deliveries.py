"""The outbox of access webhooks (`webhook_deliveries`): writing it, taking each subscriber's head, finding rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, exc, func, select, update
from sqlalchemy.orm import Session

from ..models import DeliveryStatus, WebhookDelivery
from ._sql import rows_changed

# PostgreSQL's lock_not_available: FOR UPDATE NOWAIT met a row another transaction holds.
_LOCK_NOT_AVAILABLE = "55P03"


class HeadBusy(Exception):
    """Another drain holds this subscriber's head (it is being posted now)."""


def add(session: Session, delivery: WebhookDelivery) -> None:
    session.add(delivery)


def lock_heads(session: Session, subscriber: str, limit: int) -> list[WebhookDelivery]:
    """The subscriber's oldest pending deliveries (at most `limit`, oldest first), locked until this transaction
    ends; empty when none is pending.

    Raises HeadBusy, without waiting, when another transaction holds them: that drain will take the next ones
    too, as it re-reads the head after each commit. (SQLite has no row locks; its callers serialise drains of
    one subscriber in process.)
    """
    statement = (
        select(WebhookDelivery)
        .where(WebhookDelivery.status == DeliveryStatus.PENDING, WebhookDelivery.subscriber == subscriber)
        .order_by(WebhookDelivery.id)
        .limit(limit)
        .with_for_update(nowait=True)
    )
    try:
        return list(session.scalars(statement))
    except exc.OperationalError as error:
        if getattr(error.orig, "sqlstate", None) == _LOCK_NOT_AVAILABLE:
            raise HeadBusy(subscriber) from None
        raise


def heads(session: Session) -> list[WebhookDelivery]:
    """The oldest pending delivery of each subscriber (one row per subscriber with anything pending)."""
    first = (
        select(func.min(WebhookDelivery.id))
        .where(WebhookDelivery.status == DeliveryStatus.PENDING)
        .group_by(WebhookDelivery.subscriber)
    )
    return list(session.scalars(select(WebhookDelivery).where(WebhookDelivery.id.in_(first))))


@dataclass(frozen=True)
class DeliveryFilter:
    status: str | None = None  # a DeliveryStatus
    subscriber: str | None = None
    customer_id: str | None = None
    since: datetime | None = None  # created since
    limit: int = 50


def find(session: Session, where: DeliveryFilter) -> list[WebhookDelivery]:
    """Deliveries matching the filter, newest first."""
    statement = select(WebhookDelivery)
    if where.status:
        statement = statement.where(WebhookDelivery.status == where.status)
    if where.subscriber:
        statement = statement.where(WebhookDelivery.subscriber == where.subscriber)
    if where.customer_id:
        statement = statement.where(WebhookDelivery.customer_id == where.customer_id)
    if where.since:
        statement = statement.where(WebhookDelivery.created_at >= where.since)
    return list(session.scalars(statement.order_by(WebhookDelivery.id.desc()).limit(where.limit)))


def by_ids(session: Session, ids: Sequence[int]) -> list[WebhookDelivery]:
    statement = select(WebhookDelivery).where(WebhookDelivery.id.in_(ids))
    return list(session.scalars(statement.order_by(WebhookDelivery.id)))


def replayable(
    session: Session, status: str | None, since: datetime | None, subscriber: str | None
) -> list[WebhookDelivery]:
    """Finished deliveries to send again: of this status (None: delivered or failed), written since, of one
    subscriber; oldest first."""
    statement = select(WebhookDelivery).where(
        WebhookDelivery.status.in_([status] if status else [DeliveryStatus.DELIVERED, DeliveryStatus.FAILED])
    )
    if since is not None:
        statement = statement.where(WebhookDelivery.created_at >= since)
    if subscriber is not None:
        statement = statement.where(WebhookDelivery.subscriber == subscriber)
    return list(session.scalars(statement.order_by(WebhookDelivery.id)))


def reopen(session: Session, ids: Sequence[int], now: datetime) -> None:
    """Make the deliveries pending again, due now, with a fresh retry window (their attempts keep counting)."""
    statement = update(WebhookDelivery).values(
        status=DeliveryStatus.PENDING, pending_since=now, next_attempt_at=None, delivered_at=None
    )
    for start in range(0, len(ids), 500):  # SQLite's limit on bound parameters
        session.execute(statement.where(WebhookDelivery.id.in_(ids[start : start + 500])))


def delete_delivered_batch(session: Session, before: datetime, limit: int) -> int:
    """Delete up to `limit` deliveries delivered before this moment (failed and pending ones are kept)."""
    ids = select(WebhookDelivery.id).where(
        WebhookDelivery.status == DeliveryStatus.DELIVERED, WebhookDelivery.delivered_at < before
    )
    batch = ids.limit(limit).scalar_subquery()
    return rows_changed(session, delete(WebhookDelivery).where(WebhookDelivery.id.in_(batch)))


def pending_by_subscriber(session: Session) -> dict[str, tuple[int, datetime]]:
    """Per subscriber with anything pending: (how many, since when the oldest waits: written or replayed)."""
    statement = (
        select(WebhookDelivery.subscriber, func.count(), func.min(WebhookDelivery.pending_since))
        .where(WebhookDelivery.status == DeliveryStatus.PENDING)
        .group_by(WebhookDelivery.subscriber)
    )
    return {subscriber: (int(count), oldest) for subscriber, count, oldest in session.execute(statement)}
