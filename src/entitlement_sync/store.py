"""Every query. Functions take a Session and never commit: the use case owns the transaction."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    CursorResult,
    and_,
    bindparam,
    delete,
    exists,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from .events import InboundEvent, SubscriptionSnapshot
from .models import (
    AccessChange,
    CustomerSyncState,
    Entitlement,
    EventAttempt,
    EventStatus,
    StripeEvent,
    Subscription,
)
from .stripe_gateway import ActiveEntitlement


def _insert(session: Session, table: Any) -> Any:
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def rows_changed(session: Session, statement: Any) -> int:
    """How many rows an UPDATE touched (reliable for UPDATE on every driver we use)."""
    return cast(CursorResult[Any], session.execute(statement)).rowcount


# --- the inbox -------------------------------------------------------------------------------------------


def insert_event_if_new(session: Session, event: InboundEvent, status: str, note: str | None, now: datetime) -> bool:
    """Store the event unless its id is already there; True when this call stored it."""
    statement = (
        _insert(session, StripeEvent.__table__)
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


def advance_customer_seq(session: Session, customer_id: str) -> int:
    """Bump and return the customer's sequence; the row lock orders concurrent bumps by commit."""
    table = CustomerSyncState.__table__
    statement = (
        _insert(session, table)
        .values(customer_id=customer_id, seq=1, applied_seq=0)
        .on_conflict_do_update(index_elements=["customer_id"], set_={"seq": table.c.seq + 1})
        .returning(table.c.seq)
    )
    return int(session.execute(statement).scalar_one())


def set_customer_seq(session: Session, event_id: str, seq: int) -> None:
    session.execute(update(StripeEvent).where(StripeEvent.id == event_id).values(customer_seq=seq))


def get_event(session: Session, event_id: str) -> StripeEvent | None:
    return session.get(StripeEvent, event_id)


def set_status(
    session: Session, event_id: str, status: str, now: datetime, *, only_from: Iterable[str] | None = None
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
        .where(StripeEvent.id == event_id, StripeEvent.status.in_(EventStatus.UNFINISHED))
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
    session: Session, event_id: str, attempt_id: int, status: str, error: str | None, now: datetime
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


def unfinished_event_ids(
    session: Session, now: datetime, received_grace: timedelta, stuck_after: timedelta
) -> list[str]:
    """Events nobody is working on: never enqueued (broker was down), or stuck past the timeout."""
    statement = select(StripeEvent.id).where(stuck_clause(now, received_grace, stuck_after))
    return list(session.scalars(statement.order_by(StripeEvent.received_at).limit(1000)))


def stuck_clause(now: datetime, received_grace: timedelta, stuck_after: timedelta) -> ColumnElement[bool]:
    """What the sweep picks up again, so that `events list --status stuck` shows exactly that."""
    never_enqueued = and_(
        StripeEvent.status == EventStatus.RECEIVED, StripeEvent.status_changed_at < now - received_grace
    )
    stuck = and_(
        StripeEvent.status.in_((EventStatus.QUEUED, EventStatus.PROCESSING)),
        StripeEvent.status_changed_at < now - stuck_after,
    )
    return or_(never_enqueued, stuck)


# --- the access table ------------------------------------------------------------------------------------


def applied_seq(session: Session, customer_id: str) -> int:
    value = session.scalar(select(CustomerSyncState.applied_seq).where(CustomerSyncState.customer_id == customer_id))
    return int(value or 0)


def claim_apply(session: Session, customer_id: str, ticket: int, now: datetime) -> bool:
    """Take the right to write this customer's rows; False when a fetch that started later already wrote them.

    The UPDATE locks the row, so a concurrent applier waits here and then sees the newer applied_seq.
    """
    statement = (
        update(CustomerSyncState)
        .where(CustomerSyncState.customer_id == customer_id, CustomerSyncState.applied_seq < ticket)
        .values(applied_seq=ticket, synced_at=now)
    )
    return rows_changed(session, statement) == 1


@dataclass(frozen=True)
class AccessDiff:
    granted: list[ActiveEntitlement]
    revoked: list[Entitlement]

    @property
    def changed(self) -> bool:
        return bool(self.granted or self.revoked)


def diff_entitlements(current: Sequence[Entitlement], fetched: Sequence[ActiveEntitlement]) -> AccessDiff:
    """What replacing `current` with `fetched` grants and revokes; the one diff for a sync and its dry run."""
    have = {row.feature_id for row in current}
    wanted = {item.feature_id: item for item in fetched}
    return AccessDiff(
        granted=[item for feature, item in wanted.items() if feature not in have],
        revoked=[row for row in current if row.feature_id not in wanted],
    )


def replace_entitlements(
    session: Session,
    customer_id: str,
    fetched: Sequence[ActiveEntitlement],
    event_id: str | None,
    now: datetime,
) -> AccessDiff:
    current = {
        row.feature_id: row
        for row in session.scalars(select(Entitlement).where(Entitlement.customer_id == customer_id))
    }
    wanted = {item.feature_id: item for item in fetched}
    diff = diff_entitlements(list(current.values()), fetched)
    granted, revoked = diff.granted, diff.revoked
    if revoked:
        session.execute(
            delete(Entitlement).where(
                Entitlement.customer_id == customer_id,
                Entitlement.feature_id.in_([row.feature_id for row in revoked]),
            )
        )
    for feature, item in wanted.items():
        row = current.get(feature)
        if row is not None and (row.lookup_key, row.entitlement_id) != (item.lookup_key, item.id):
            row.lookup_key, row.entitlement_id = item.lookup_key, item.id
    session.add_all(
        Entitlement(
            customer_id=customer_id,
            feature_id=item.feature_id,
            lookup_key=item.lookup_key,
            entitlement_id=item.id,
            granted_at=now,
        )
        for item in granted
    )
    session.add_all(
        [_change(customer_id, item.feature_id, item.lookup_key, "granted", event_id, now) for item in granted]
        + [_change(customer_id, row.feature_id, row.lookup_key, "revoked", event_id, now) for row in revoked]
    )
    return AccessDiff(granted=granted, revoked=revoked)


def _change(customer_id: str, feature_id: str, lookup_key: str, change: str, event_id: str | None, now: datetime):
    return AccessChange(
        customer_id=customer_id,
        feature_id=feature_id,
        lookup_key=lookup_key,
        change=change,
        changed_at=now,
        event_id=event_id,
    )


def entitlements_of(session: Session, customer_id: str) -> list[Entitlement]:
    statement = select(Entitlement).where(Entitlement.customer_id == customer_id)
    return list(session.scalars(statement.order_by(Entitlement.lookup_key, Entitlement.feature_id)))


# The read path runs on a plain Connection with statements built once: services call it on their hot path,
# and skipping the ORM's unit of work and statement construction makes a lookup several times cheaper.
_SYNCED_AT = (
    select(CustomerSyncState.synced_at).where(CustomerSyncState.customer_id == bindparam("customer")).scalar_subquery()
)
_ACCESS_TO = select(
    exists().where(Entitlement.customer_id == bindparam("customer"), Entitlement.lookup_key == bindparam("key")),
    _SYNCED_AT,
)
_GRANTED_ROWS = (
    select(Entitlement.lookup_key, Entitlement.feature_id, Entitlement.entitlement_id, Entitlement.granted_at)
    .where(Entitlement.customer_id == bindparam("customer"))
    .order_by(Entitlement.lookup_key, Entitlement.feature_id)
)


def granted_rows(connection: Connection, customer_id: str) -> list[tuple[str, str, str, datetime]]:
    return [tuple(row) for row in connection.execute(_GRANTED_ROWS, {"customer": customer_id})]  # type: ignore[misc]


def access_to(connection: Connection, customer_id: str, lookup_key: str) -> tuple[bool, datetime | None]:
    """Whether the customer holds the lookup key, and when they were last synced, in one round trip."""
    granted, synced = connection.execute(_ACCESS_TO, {"customer": customer_id, "key": lookup_key}).one()
    return bool(granted), synced


def synced_at(connection: Connection | Session, customer_id: str) -> datetime | None:
    return connection.scalar(select(_SYNCED_AT), {"customer": customer_id})


# --- the subscription mirror -----------------------------------------------------------------------------

TERMINAL_SUBSCRIPTION_STATUSES = ("canceled", "incomplete_expired")


def upsert_subscription(
    session: Session, snapshot: SubscriptionSnapshot, event_created: int, event_id: str, now: datetime
) -> bool:
    """Write the snapshot unless the row came from a newer event; True when it was written.

    Stripe's `created` has one-second resolution, so on a tie the later arrival wins, except that a
    terminal status (canceled) is never undone: Stripe never revives a canceled subscription.
    """
    table = Subscription.__table__
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
    }
    statement = _insert(session, table).values(**values)
    newer = or_(
        table.c.event_created < statement.excluded.event_created,
        and_(
            table.c.event_created == statement.excluded.event_created,
            table.c.status.not_in(TERMINAL_SUBSCRIPTION_STATUSES),
        ),
    )
    statement = statement.on_conflict_do_update(
        index_elements=["id"],
        set_={key: statement.excluded[key] for key in values if key != "id"},
        where=newer,
    ).returning(table.c.id)
    return session.execute(statement).first() is not None


# --- figures for monitoring ------------------------------------------------------------------------------


def events_by_status(session: Session) -> dict[str, int]:
    rows = session.execute(select(StripeEvent.status, func.count()).group_by(StripeEvent.status))
    return {status: int(count) for status, count in rows}


def oldest_unfinished_received_at(session: Session) -> datetime | None:
    return session.scalar(
        select(func.min(StripeEvent.received_at)).where(StripeEvent.status.in_(EventStatus.UNFINISHED))
    )
