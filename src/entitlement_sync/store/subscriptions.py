"""The subscription mirror (`subscriptions`): what subscription events last said, newest event wins."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, case, func, or_, select, union
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from ..events import SubscriptionSnapshot
from ..models import CustomerSyncState, Entitlement, Subscription
from ..policy import PolicyInputs
from ._sql import dialect_of, pg_rows, pg_rows_together, upsert
from .effective import EffectiveRow
from .policy_inputs import inputs_and_rows_from, inputs_and_rows_statement

TERMINAL_SUBSCRIPTION_STATUSES = ("canceled", "incomplete_expired")


def upsert_subscription(
    session: Session, snapshot: SubscriptionSnapshot, event_created: int, event_id: str, now: datetime
) -> bool:
    """Write the snapshot unless the row came from a newer event; True when it was written.

    Stripe's `created` has one-second resolution, so on a tie the later arrival wins, except that a
    terminal status (canceled) is never undone: Stripe never revives a canceled subscription.
    """
    values = _row_values(snapshot, event_created, event_id, now)
    if dialect_of(session) == "postgresql":
        return bool(pg_rows(session, _UPSERT_PG, _pg_values(values)))
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


def _row_values(snapshot: SubscriptionSnapshot, event_created: int, event_id: str, now: datetime) -> dict[str, Any]:
    return {
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


@dataclass(frozen=True)
class Mirrored:
    """The mirror's write: whether the row was written, and (PostgreSQL) the customer's policy read after it."""

    written: bool
    read: tuple[PolicyInputs, dict[str, EffectiveRow]] | None


@contextmanager
def mirrored(
    session: Session, snapshot: SubscriptionSnapshot, event_created: int, event_id: str, now: datetime
) -> Iterator[Mirrored]:
    """`upsert_subscription` in a savepoint of its own, which also holds what the block writes after it (the
    recompute): an exception in the block rolls them back together, and is raised. Call it with the customer's
    lock held.

    PostgreSQL: the SAVEPOINT, the upsert and the policy's read after it go in one round trip, and the savepoint
    is never released (COMMIT ends it with the rest); three round trips fewer than a nested Session transaction,
    for every subscription event. Its statements go through the driver, unseen by the Session: a lock the block
    takes on another customer is not forgotten if the savepoint is rolled back (the mirror takes none).
    """
    if dialect_of(session) != "postgresql":
        with session.begin_nested():
            yield Mirrored(upsert_subscription(session, snapshot, event_created, event_id, now), None)
        return
    values = _pg_values(_row_values(snapshot, event_created, event_id, now))
    try:
        _, written, read = pg_rows_together(
            session, [(_SAVEPOINT, None), (_UPSERT_PG, values), inputs_and_rows_statement(snapshot.customer_id)]
        )
        yield Mirrored(bool(written), inputs_and_rows_from(read))
    except BaseException as error:
        # The SAVEPOINT went first: only a lost connection leaves nothing to roll back to.
        if not (isinstance(error, DBAPIError) and error.connection_invalidated):
            pg_rows(session, _ROLLBACK_TO, None)
        raise


def _pg_values(values: dict[str, Any]) -> dict[str, Any]:
    """`_UPSERT_PG`'s parameters: the JSON columns as JSON text."""
    return {**values, "price_ids": json.dumps(values["price_ids"]), "product_ids": json.dumps(values["product_ids"])}


_SAVEPOINT, _ROLLBACK_TO = "SAVEPOINT subscription_mirror", "ROLLBACK TO SAVEPOINT subscription_mirror"
# `upsert_subscription` on PostgreSQL, written out for the driver (the portable statement above is SQLite's): the
# same rules, checked on both by the same tests (test_sync.py, test_effective_access.py).
_UPSERT_PG = (
    "INSERT INTO subscriptions (id, customer_id, status, cancel_at_period_end, current_period_end, price_ids,"
    " product_ids, event_created, event_id, updated_at, past_due_since) VALUES (%(id)s, %(customer_id)s,"
    " %(status)s, %(cancel_at_period_end)s, %(current_period_end)s, %(price_ids)s::json, %(product_ids)s::json,"
    " %(event_created)s, %(event_id)s, %(updated_at)s, %(past_due_since)s)"
    " ON CONFLICT (id) DO UPDATE SET customer_id = EXCLUDED.customer_id, status = EXCLUDED.status,"
    " cancel_at_period_end = EXCLUDED.cancel_at_period_end, current_period_end = EXCLUDED.current_period_end,"
    " price_ids = EXCLUDED.price_ids, product_ids = EXCLUDED.product_ids, event_created = EXCLUDED.event_created,"
    " event_id = EXCLUDED.event_id, updated_at = EXCLUDED.updated_at,"
    " past_due_since = CASE WHEN subscriptions.status = 'past_due' AND EXCLUDED.status = 'past_due'"
    " THEN coalesce(subscriptions.past_due_since, EXCLUDED.past_due_since) ELSE EXCLUDED.past_due_since END"
    " WHERE subscriptions.event_created < EXCLUDED.event_created OR (subscriptions.event_created ="
    f" EXCLUDED.event_created AND subscriptions.status NOT IN {TERMINAL_SUBSCRIPTION_STATUSES!r})"
    " RETURNING id"
)


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
