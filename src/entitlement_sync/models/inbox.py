"""The inbox and its bookkeeping: Stripe's events, attempts, per-customer order, counts and periodic runs."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, utcnow


class EventStatus(StrEnum):
    """Where an inbox event stands.

    Unfinished (in flight): received, queued, processing. `waiting`: Stripe was unavailable for longer than the
    queue's retries; the sweep tries again at `retry_at`, with no operator. Final: processed, superseded (a
    later fetch already applied its effect), ignored, and failed (needs a person: a 401/403, a bug).
    """

    RECEIVED = "received"
    QUEUED = "queued"
    PROCESSING = "processing"
    WAITING = "waiting"
    PROCESSED = "processed"
    SUPERSEDED = "superseded"
    FAILED = "failed"
    IGNORED = "ignored"


UNFINISHED = (EventStatus.RECEIVED, EventStatus.QUEUED, EventStatus.PROCESSING)
# What an attempt may claim: in flight, or waiting for Stripe (the sweep hands those back at their time).
CLAIMABLE = (*UNFINISHED, EventStatus.WAITING)


class StripeEvent(Base):
    """The inbox: every webhook we accepted, keyed by Stripe's event id so a redelivery is a no-op."""

    __tablename__ = "stripe_events"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(100))
    customer_id: Mapped[str | None] = mapped_column(String(255), index=True)
    livemode: Mapped[bool] = mapped_column(Boolean)
    created: Mapped[int] = mapped_column(BigInteger, doc="Stripe's `created`, unix seconds")
    payload: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(20))
    # The customer's sync sequence when the event was stored: a fetch with a higher ticket saw this event.
    customer_seq: Mapped[int | None] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    status_changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    processed_at: Mapped[datetime | None]
    # The attempt that owns the event: only it may finish the event, so a duplicate job that lost the race can
    # never move a processed event back to queued or failed.
    claimed_by: Mapped[int | None] = mapped_column(Integer)
    # Stripe unavailable (429, 5xx, timeouts): since when, how many sweep pauses so far, and when to try again.
    unavailable_since: Mapped[datetime | None]
    waits: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    retry_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_stripe_events_status_changed", "status", "status_changed_at"),)


class EventAttempt(Base):
    """One try at processing an event, kept so that ops can see every failure, not just the last."""

    __tablename__ = "event_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("stripe_events.id", ondelete="CASCADE"), index=True)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    outcome: Mapped[str | None] = mapped_column(String(20))
    error: Mapped[str | None] = mapped_column(Text)


class CustomerSyncState(Base):
    """Per-customer ordering. `seq` grows on every stored event and every fetch ticket, in commit order.

    A fetch applies only if its ticket beats `applied_seq`, so an older read never overwrites a newer one;
    an event whose `customer_seq` is below `applied_seq` was already seen by an applied fetch.
    """

    __tablename__ = "customer_sync_state"

    customer_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    applied_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    synced_at: Mapped[datetime | None]
    # The customer's `seq` when the rows were last written (by a fetch or a complete payload): a fetch whose ticket
    # is above it started after the held state existed. See docs/design.md, "Ordering by Stripe's clock".
    state_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    # Stripe's clock of the state the rows hold (unix seconds): as_of_from <= τ < as_of_until; NULL: unknown.
    as_of_from: Mapped[int | None] = mapped_column(BigInteger)
    as_of_until: Mapped[int | None] = mapped_column(BigInteger)


class SyncCheckpoint(Base):
    """Progress of a long reconcile (`sync all`): customers go in id order, so a cursor resumes it."""

    __tablename__ = "sync_checkpoints"

    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    last_customer_id: Mapped[str | None] = mapped_column(String(255))
    checked: Mapped[int] = mapped_column(Integer, default=0)
    granted: Mapped[int] = mapped_column(Integer, default=0)
    revoked: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


class EventStatusCount(Base):
    """How many inbox events stand in each status, kept by database triggers as rows change, so that
    `/metrics` never counts `stripe_events` (millions of rows) to answer.

    On PostgreSQL the triggers append to `event_status_deltas` (no hot row to lock, no deadlock between two
    transactions moving events in opposite directions) and a reader folds the deltas in here; on SQLite,
    which has one writer at a time, the triggers update this table directly.
    """

    __tablename__ = "event_status_counts"

    status: Mapped[str] = mapped_column(String(20), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, default=0)


class EventStatusDelta(Base):
    """Changes to `event_status_counts` not yet folded in (PostgreSQL only; see EventStatusCount)."""

    __tablename__ = "event_status_deltas"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    status: Mapped[str] = mapped_column(String(20))
    delta: Mapped[int] = mapped_column(BigInteger)


class PeriodicRun(Base):
    """When a periodic job (the daily inbox prune) last started, so that one process runs it, not each."""

    __tablename__ = "periodic_runs"

    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    last_started_at: Mapped[datetime]
