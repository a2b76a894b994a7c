"""Locks held in the database, so that processes on several hosts agree without anything else."""

from __future__ import annotations

import zlib

from sqlalchemy import func, select
from sqlalchemy.orm import Session

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
