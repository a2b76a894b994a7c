"""The queries behind the ops commands. Like `store`, functions take a Session and never commit."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, select, union, update
from sqlalchemy.orm import Session

from .models import (
    AccessChange,
    CustomerSyncState,
    Entitlement,
    EventAttempt,
    EventStatus,
    Feature,
    ProductFeature,
    StripeEvent,
    Subscription,
    SyncCheckpoint,
)
from .store import rows_changed
from .stripe_gateway import CatalogFeature, ProductFeatureLink

# --- the inbox -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventFilter:
    status: str | None = None  # one of EventStatus.ALL, or "stuck"
    type: str | None = None
    customer_id: str | None = None
    since: datetime | None = None
    limit: int = 50


def find_events(session: Session, where: EventFilter, stuck: ColumnElement[bool]) -> list[StripeEvent]:
    statement = select(StripeEvent)
    if where.status == "stuck":
        statement = statement.where(stuck)
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
    replayable = [status for status in EventStatus.ALL if status != EventStatus.IGNORED]
    statement = update(StripeEvent).where(StripeEvent.id == event_id)
    statement = statement.where(StripeEvent.status.in_([EventStatus.IGNORED] if was_ignored else replayable))
    values: dict[str, Any] = {"status": EventStatus.RECEIVED, "status_changed_at": now}
    if was_ignored:
        values["last_error"] = None  # the reason it was ignored no longer holds
    return rows_changed(session, statement.values(**values)) == 1


def events_by_id(session: Session, event_ids: Sequence[str]) -> dict[str, StripeEvent]:
    rows = session.scalars(select(StripeEvent).where(StripeEvent.id.in_(list(event_ids))))
    return {row.id: row for row in rows}


# --- customers and the reconcile checkpoint --------------------------------------------------------------


def local_customer_ids(session: Session) -> set[str]:
    """Every customer the local tables know: granted something, ever synced, or with a subscription."""
    statement = union(
        select(Entitlement.customer_id),
        select(CustomerSyncState.customer_id),
        select(Subscription.customer_id),
    )
    return set(session.scalars(statement))


def get_checkpoint(session: Session, name: str) -> SyncCheckpoint | None:
    return session.get(SyncCheckpoint, name)


def start_checkpoint(session: Session, name: str, now: datetime) -> SyncCheckpoint:
    session.execute(delete(SyncCheckpoint).where(SyncCheckpoint.name == name))
    checkpoint = SyncCheckpoint(
        name=name,
        last_customer_id=None,
        checked=0,
        granted=0,
        revoked=0,
        errors=0,
        started_at=now,
        updated_at=now,
    )
    session.add(checkpoint)
    session.flush()
    return checkpoint


def advance_checkpoint(session: Session, name: str, customer_id: str, counts: dict[str, int], now: datetime) -> None:
    values: dict[str, Any] = {key: getattr(SyncCheckpoint, key) + value for key, value in counts.items()}
    statement = update(SyncCheckpoint).where(SyncCheckpoint.name == name)
    session.execute(statement.values(last_customer_id=customer_id, updated_at=now, **values))


def finish_checkpoint(session: Session, name: str, now: datetime) -> None:
    statement = update(SyncCheckpoint).where(SyncCheckpoint.name == name)
    session.execute(statement.values(finished_at=now, updated_at=now))


# --- access history --------------------------------------------------------------------------------------


def access_history(session: Session, customer_id: str, limit: int) -> list[AccessChange]:
    statement = select(AccessChange).where(AccessChange.customer_id == customer_id)
    return list(
        session.scalars(statement.order_by(AccessChange.changed_at.desc(), AccessChange.id.desc()).limit(limit))
    )


def feature_names(session: Session, feature_ids: Iterable[str]) -> dict[str, str]:
    rows = session.execute(select(Feature.id, Feature.name).where(Feature.id.in_(list(feature_ids))))
    return {feature_id: name for feature_id, name in rows}


# --- the feature catalog ---------------------------------------------------------------------------------


def all_features(session: Session) -> list[Feature]:
    return list(session.scalars(select(Feature).order_by(Feature.lookup_key, Feature.id)))


def upsert_features(session: Session, features: Sequence[CatalogFeature], now: datetime) -> tuple[int, int]:
    """Write the catalog; returns (new, changed) counts."""
    existing = {row.id: row for row in session.scalars(select(Feature))}
    new = changed = 0
    for item in features:
        row = existing.get(item.id)
        if row is None:
            session.add(
                Feature(
                    id=item.id,
                    lookup_key=item.lookup_key,
                    name=item.name,
                    active=item.active,
                    livemode=item.livemode,
                    synced_at=now,
                )
            )
            new += 1
            continue
        if (row.lookup_key, row.name, row.active) != (item.lookup_key, item.name, item.active):
            changed += 1
        row.lookup_key, row.name, row.active, row.synced_at = item.lookup_key, item.name, item.active, now
    return new, changed


def known_product_ids(session: Session) -> set[str]:
    """Products named by the subscription mirror or already linked to a feature."""
    products = set(session.scalars(select(ProductFeature.product_id)))
    for product_ids in session.scalars(select(Subscription.product_ids)):
        products.update(product_ids or [])
    return products


def replace_product_features(
    session: Session, product_id: str, links: Sequence[ProductFeatureLink], now: datetime
) -> tuple[int, int]:
    """Make the product's links exactly these; returns (added, removed)."""
    current = set(session.scalars(select(ProductFeature.feature_id).where(ProductFeature.product_id == product_id)))
    wanted = {link.feature.id: link for link in links}
    removed = current - wanted.keys()
    if removed:
        session.execute(
            delete(ProductFeature).where(
                ProductFeature.product_id == product_id, ProductFeature.feature_id.in_(list(removed))
            )
        )
    added = [link for feature_id, link in wanted.items() if feature_id not in current]
    session.add_all(
        ProductFeature(product_id=product_id, feature_id=link.feature.id, product_feature_id=link.id, synced_at=now)
        for link in added
    )
    return len(added), len(removed)


def products_by_feature(session: Session) -> dict[str, list[str]]:
    granted_by: dict[str, list[str]] = {}
    statement = select(ProductFeature.feature_id, ProductFeature.product_id).order_by(ProductFeature.product_id)
    for feature_id, product_id in session.execute(statement):
        granted_by.setdefault(feature_id, []).append(product_id)
    return granted_by
