"""The per-customer ordering that guards the access table (`customer_sync_state`): one sequence per customer,
bumped by every stored event, fetch ticket and write, and what the rows hold by it and by Stripe's clock."""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from ..models import CustomerSyncState
from ..ordering import NOTHING_HELD, Held, Window
from ._sql import dialect_of, pg_rows, upsert_for


def advance_customer_seq(session: Session, customer_id: str, *, last: bool = False) -> int:
    """Bump and return the customer's sequence; the row lock orders concurrent bumps by commit. `last`: the
    transaction's last statement, which may take its COMMIT along (`_sql.pg_rows`)."""
    dialect = dialect_of(session)
    if dialect == "postgresql":
        return int(pg_rows(session, _ADVANCE_PG, {"customer": customer_id}, last=last)[0][0])
    return int(session.connection().execute(_advance(dialect), {"customer": customer_id}).scalar_one())


def advancing(first_row: str) -> str:
    """PostgreSQL: `_advance` written out for the driver (the worker takes a ticket for every fetch), for one place
    of the rule whoever sends it. `first_row`: the SQL yielding the row a new customer starts with,
    `(customer_id, 1, 0, 0)`: a VALUES list, or a SELECT from the caller's CTEs (the claim's)."""
    return (
        f"INSERT INTO customer_sync_state (customer_id, seq, applied_seq, state_seq) {first_row}"
        " ON CONFLICT (customer_id) DO UPDATE SET seq = customer_sync_state.seq + 1 RETURNING seq"
    )


_ADVANCE_PG = advancing("VALUES (%(customer)s, 1, 0, 0)")


@cache
def _advance(dialect: str) -> Any:
    return (
        upsert_for(dialect, CustomerSyncState)
        .values(customer_id=bindparam("customer"), seq=1, applied_seq=0)
        .on_conflict_do_update(index_elements=["customer_id"], set_={"seq": CustomerSyncState.seq + 1})
        .returning(CustomerSyncState.seq)
    )


def applied_seq(session: Session, customer_id: str) -> int:
    value = session.scalar(select(CustomerSyncState.applied_seq).where(CustomerSyncState.customer_id == customer_id))
    return int(value or 0)


def held_state(session: Session, customer_id: str) -> Held:
    """What the customer's rows hold, by sequence and by Stripe's clock. Callers hold the customer's lock: only
    writers of the rows change what this reads, and they all take it."""
    row = session.connection().execute(_HELD, {"customer": customer_id}).first()
    return NOTHING_HELD if row is None else held_from(*row)


def held_from(synced_at: Any, applied: int | None, state_seq: int | None, start: int | None, end: int | None) -> Held:
    """The held state from `customer_sync_state`'s columns (all None: no row, nothing held)."""
    return Held(synced_at is not None, int(applied or 0), int(state_seq or 0), Window(start, end))


_HELD = select(
    CustomerSyncState.synced_at,
    CustomerSyncState.applied_seq,
    CustomerSyncState.state_seq,
    CustomerSyncState.as_of_from,
    CustomerSyncState.as_of_until,
).where(CustomerSyncState.customer_id == bindparam("customer"))


def record_write(session: Session, customer_id: str, after: Held, now: datetime) -> int:
    """Note that the rows were just written with a state held as `after` says; returns the new `state_seq`.

    The write takes its own place in the customer's sequence: a fetch whose ticket comes later started after
    this state was in the table.
    """
    values = {
        "customer": customer_id,
        "applied": after.applied_seq,
        "from_": after.window.start,
        "until": after.window.end,
        "now": now,
    }
    return int(session.connection().execute(_record(dialect_of(session)), values).scalar_one())


@cache
def _record(dialect: str) -> Any:
    values = {
        "applied_seq": bindparam("applied"),
        "as_of_from": bindparam("from_"),
        "as_of_until": bindparam("until"),
        "synced_at": bindparam("now", type_=CustomerSyncState.__table__.c.synced_at.type),
    }
    return (
        upsert_for(dialect, CustomerSyncState)
        .values(customer_id=bindparam("customer"), seq=1, state_seq=1, **values)
        .on_conflict_do_update(
            index_elements=["customer_id"],
            set_={"seq": CustomerSyncState.seq + 1, "state_seq": CustomerSyncState.seq + 1, **values},
        )
        .returning(CustomerSyncState.state_seq)
    )
