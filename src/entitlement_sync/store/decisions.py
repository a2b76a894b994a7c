"""The read path of effective access: one statement per answer, so that the rows and the sync state come from
one snapshot.

Plain SQL, one text for both databases: PostgreSQL runs it through the driver on a connection kept per reading
thread (prepared once per connection, no SQLAlchemy on the hot path; kept_connections.py), SQLite through
SQLAlchemy, which types the results (JSON, aware datetimes) as PostgreSQL's driver does."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean

from ..models import CLAIMABLE, EventStatus, UTCDateTime
from ..reads import Read, Reads

# An event not yet seen by an applied fetch (stored after the last applied ticket) and not finished well:
# in flight, waiting for Stripe, or failed.
_UNSEEN = ", ".join(f"'{status.value}'" for status in (*CLAIMABLE, EventStatus.FAILED))
_SYNC_STATE = f"""(SELECT synced_at FROM customer_sync_state WHERE customer_id = :customer) AS synced_at,
 EXISTS (SELECT 1 FROM stripe_events WHERE stripe_events.customer_id = :customer
  AND stripe_events.status IN ({_UNSEEN})
  AND (stripe_events.customer_seq IS NULL OR stripe_events.customer_seq >=
   (SELECT applied_seq FROM customer_sync_state WHERE customer_id = :customer))) AS unseen"""
_DECISION_TYPES = {"synced_at": UTCDateTime(), "unseen": Boolean(), "granted": Boolean(), "sources": JSON()}

GRANTED = Read("SELECT granted FROM effective_access WHERE customer_id = :customer AND lookup_key = :key")
DECISION = Read(
    f"SELECT {_SYNC_STATE}, d.granted, d.reason, d.sources, d.since FROM (SELECT 1 AS one) AS one"
    " LEFT JOIN effective_access d ON d.customer_id = :customer AND d.lookup_key = :key",
    {**_DECISION_TYPES, "since": UTCDateTime()},
)
DECISIONS = Read(
    f"SELECT {_SYNC_STATE}, d.lookup_key, d.granted, d.reason, d.sources, d.since FROM (SELECT 1 AS one) AS one"
    " LEFT JOIN effective_access d ON d.customer_id = :customer ORDER BY d.lookup_key",
    {**_DECISION_TYPES, "since": UTCDateTime()},
)


def is_granted(reads: Reads, customer_id: str, lookup_key: str) -> bool:
    """The hot path: one primary-key lookup."""
    return bool(reads.flag(GRANTED, {"customer": customer_id, "key": lookup_key}))


def decision_with_state(reads: Reads, customer_id: str, lookup_key: str) -> tuple[Any, datetime | None, bool]:
    """((granted, reason, sources, since) or None without a row, when the customer was last synced, whether an
    event of theirs waits unseen by any applied fetch)."""
    synced_at, unseen, *decision = reads.rows(DECISION, {"customer": customer_id, "key": lookup_key})[0]
    return (None if decision[0] is None else tuple(decision)), synced_at, bool(unseen)


def decisions_with_state(reads: Reads, customer_id: str) -> tuple[list[Any], datetime | None, bool]:
    """Every (lookup_key, granted, reason, sources, since) of the customer, with the sync state as above."""
    rows = reads.rows(DECISIONS, {"customer": customer_id})
    synced_at, unseen = rows[0][0], bool(rows[0][1])
    return [tuple(row[2:]) for row in rows if row[2] is not None], synced_at, unseen
