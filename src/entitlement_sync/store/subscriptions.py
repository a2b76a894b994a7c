"""The subscription mirror (`subscriptions`): what subscription events last said, newest event wins."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import and_, case, func, or_, select, union
from sqlalchemy.orm import Session

from ..events import SubscriptionSnapshot
from ..models import CustomerSyncState, Entitlement, Subscription
from ._sql import upsert

TERMINAL_SUBSCRIPTION_STATUSES = ("canceled", "incomplete_expired")


def upsert_subscription(
    session: Session, snapshot: SubscriptionSnapshot, event_created: int, event_id: str, now: datetime
) -> bool:
    """Write the snapshot unless the row came from a newer event; True when it was written.

    Stripe's `created` has one-second resolution, so on a tie the later arrival wins, except that a
    terminal status (canceled) is never undone: Stripe never revives a canceled subscription.
    """
    values = {
        "id": snapshot.id,
        "customer_id": snapshot.customer_id,
        "status": snapshot.status,
        "cancel_at_period_end": snapshot.cancel_at_period_end,
        "current_period_end": snapshot.current_period_end,
        "price_ids": snapshot.price_ids,
        "product_ids": snapshot.product_ids,
        "event_created": event_created,
        "event_id": event_id,
        "updated_at": now,
        "past_due_since": datetime.fromtimestamp(event_created, UTC) if snapshot.status == "past_due" else None,
    }
    statement = upsert(session, Subscription).values(**values)
    newer = or_(
        Subscription.event_created < statement.excluded.event_created,
        and_(
            Subscription.event_created == statement.excluded.event_created,
            Subscription.status.not_in(TERMINAL_SUBSCRIPTION_STATUSES),
        ),
    )
    set_ = {key: statement.excluded[key] for key in values if key != "id"}
    # Still past_due: the grace keeps running from when it began, not from the latest event.
    still_past_due = and_(Subscription.status == "past_due", statement.excluded.status == "past_due")
    began = func.coalesce(Subscription.past_due_since, statement.excluded.past_due_since)
    set_["past_due_since"] = case((still_past_due, began), else_=statement.excluded.past_due_since)
    statement = statement.on_conflict_do_update(
        index_elements=["id"],
        set_=set_,
        where=newer,
    ).returning(Subscription.id)
    return session.execute(statement).first() is not None


def local_customer_ids(session: Session) -> set[str]:
    """Every customer the local tables know: granted something, ever synced, or with a subscription."""
    statement = union(
        select(Entitlement.customer_id),
        select(CustomerSyncState.customer_id),
        select(Subscription.customer_id),
    )
    return set(session.scalars(statement))


def product_ids_in_use(session: Session) -> set[str]:
    """Every product a mirrored subscription names."""
    products: set[str] = set()
    for product_ids in session.scalars(select(Subscription.product_ids)):
        products.update(product_ids or [])
    return products


def of_customer(session: Session, customer_id: str) -> list[Subscription]:
    """The customer's mirrored subscriptions, the most recently changed first."""
    statement = select(Subscription).where(Subscription.customer_id == customer_id)
    return list(session.scalars(statement.order_by(Subscription.event_created.desc(), Subscription.id)))


def all_subscriptions(session: Session) -> list[tuple[str, str, list[str]]]:
    """Every mirrored subscription as (customer, status, product ids)."""
    statement = select(Subscription.customer_id, Subscription.status, Subscription.product_ids)
    return [(customer, status, list(products or [])) for customer, status, products in session.execute(statement)]


def held_features(session: Session) -> list[tuple[str, str, str]]:
    """Every (customer, feature, lookup key) Stripe's mirror holds."""
    statement = select(Entitlement.customer_id, Entitlement.feature_id, Entitlement.lookup_key)
    return [(customer, feature, key) for customer, feature, key in session.execute(statement)]
