"""Locks held in the database, so that processes on several hosts agree without anything else."""

from __future__ import annotations

import hashlib
import zlib
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..models import CustomerSyncState
from ._sql import pg_rows, pg_rows_together, upsert

# Advisory-lock keys: any 64-bit number that no other use of this database picks; derived from a name.
SWEEP = zlib.crc32(b"entitlement-sync:sweep")
FOLD_COUNTS = zlib.crc32(b"entitlement-sync:fold-event-counts")
ACCESS_REVIEW = zlib.crc32(b"entitlement-sync:access-review")


def try_transaction_lock(session: Session, key: int) -> bool:
    """Take the lock for the rest of this transaction, if no other transaction holds it; never waits.

    PostgreSQL releases it at commit, at rollback, and when the connection dies. SQLite is single-host and
    serialises writers itself: there the lock is always granted.
    """
    if session.get_bind().dialect.name != "postgresql":
        return True
    return bool(session.scalar(select(func.pg_try_advisory_xact_lock(key))))


def lock_customer(session: Session, customer_id: str, then: tuple[str, Any] | None = None) -> list[tuple[Any, ...]]:
    """Serialize recomputes of one customer until commit, so that the last writer reads every input
    committed before it.

    PostgreSQL: a transaction-scoped advisory lock, not a row lock on `customer_sync_state`, which the
    receiver takes for every stored event: a long catalog sync recomputing thousands of customers must not
    hold up webhooks. SQLite serializes writers anyway: a no-op write takes the database's write lock up
    front (reading first and writing later could fail on a snapshot another writer moved past).

    `then` (PostgreSQL only): a statement of the caller's (SQL, parameters) sent with the lock in one round trip;
    its rows are returned. The server runs it after the lock is granted, as a statement of its own, so what it
    reads is what the lock's holders committed (see docs/design.md, Cost).
    """
    if customer_id in _locks_held(session):
        # Taken earlier in this transaction: once is enough (a transaction lock is held until its end).
        return pg_rows(session, *then) if then is not None else []
    if session.get_bind().dialect.name == "postgresql":
        digest = hashlib.blake2b(customer_id.encode(), digest_size=8).digest()
        lock = (_ADVISORY_LOCK, (int.from_bytes(digest, "big", signed=True),))
        rows = pg_rows_together(session, [lock, then])[1] if then is not None else pg_rows(session, *lock)
        # Remembered only outside a SAVEPOINT: rolling one back releases the locks taken inside it.
        if not session.in_nested_transaction():
            _locks_held(session).add(customer_id)
        return rows
    assert then is None, "a statement sent with the lock is PostgreSQL's"
    statement = upsert(session, CustomerSyncState).values(customer_id=customer_id, seq=0, applied_seq=0)
    statement = statement.on_conflict_do_update(index_elements=["customer_id"], set_={"seq": CustomerSyncState.seq})
    session.execute(statement)
    return []


_ADVISORY_LOCK = "SELECT pg_advisory_xact_lock(%s)"
_LOCKS_HELD = "entitlement_sync.locks.customers_held"


def _locks_held(session: Session) -> set[str]:
    """The customers whose lock this session's current transaction holds (a fresh set for each transaction)."""
    root = session.get_transaction()
    if root is None:
        return set()  # no transaction yet: nothing held (and nothing to remember it in)
    while root.parent is not None:
        root = root.parent
    kept = session.info.get(_LOCKS_HELD)
    if kept is None or kept[0] is not root:
        kept = (root, set())
        session.info[_LOCKS_HELD] = kept
    return kept[1]
