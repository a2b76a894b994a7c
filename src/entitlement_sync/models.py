"""The tables. `entitlements` is a public contract (see README): change it only with a migration and a note."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, foreign, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always an aware UTC datetime in Python, whatever the database hands back.

    PostgreSQL keeps the zone; SQLite keeps none and returns naive values. Every moment we store is UTC, so
    the zone is put back here, once, instead of by every reader.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            return value.astimezone(UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON}


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


class AccessChangeKind(StrEnum):
    GRANTED = "granted"
    REVOKED = "revoked"


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


class Entitlement(Base):
    """The access table: one row per feature a customer may use now."""

    __tablename__ = "entitlements"

    customer_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    feature_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    lookup_key: Mapped[str] = mapped_column(String(80))
    entitlement_id: Mapped[str] = mapped_column(String(255))
    granted_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_entitlements_customer_lookup_key", "customer_id", "lookup_key"),)


class AccessChange(Base):
    """Append-only history of grants and revokes, with the event that caused each."""

    __tablename__ = "access_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(String(255), index=True)
    feature_id: Mapped[str] = mapped_column(String(255))
    lookup_key: Mapped[str] = mapped_column(String(80))
    change: Mapped[str] = mapped_column(String(10), doc="granted | revoked")
    changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    event_id: Mapped[str | None] = mapped_column(String(255))


class Subscription(Base):
    """A mirror of subscription events, for ops and readers who want plan context next to access."""

    __tablename__ = "subscriptions"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(255), index=True)
    status: Mapped[str] = mapped_column(String(30))
    cancel_at_period_end: Mapped[bool] = mapped_column(Boolean, default=False)
    current_period_end: Mapped[datetime | None]
    price_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    product_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    event_created: Mapped[int] = mapped_column(BigInteger)
    event_id: Mapped[str] = mapped_column(String(255))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    # When the subscription went past_due (the event's time), kept while it stays so: the grace runs from it.
    past_due_since: Mapped[datetime | None]


class Feature(Base):
    """Stripe's feature catalog, archived features included: they still grant access on their products."""

    __tablename__ = "features"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    # Unique only among active features in Stripe, so not unique here.
    lookup_key: Mapped[str] = mapped_column(String(80), index=True)
    name: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean)
    livemode: Mapped[bool] = mapped_column(Boolean, default=False)
    synced_at: Mapped[datetime] = mapped_column(default=utcnow)


class ProductFeature(Base):
    """Which product grants which feature, as `GET /v1/products/{id}/features` last said."""

    __tablename__ = "product_features"

    product_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    feature_id: Mapped[str] = mapped_column(String(255), primary_key=True, index=True)
    product_feature_id: Mapped[str] = mapped_column(String(255))
    synced_at: Mapped[datetime] = mapped_column(default=utcnow)


class OverrideKind(StrEnum):
    GRANT = "grant"
    DENY = "deny"


class AccessOverride(Base):
    """A grant or denial made here, outside Stripe: who, why, until when. Revoked rows stay, for the record."""

    __tablename__ = "access_overrides"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(String(255), index=True)
    lookup_key: Mapped[str] = mapped_column(String(80))
    kind: Mapped[str] = mapped_column(String(10), doc="grant | deny")
    expires_at: Mapped[datetime | None]
    created_by: Mapped[str] = mapped_column(String(255))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]
    revoked_by: Mapped[str | None] = mapped_column(String(255))


class EffectiveAccess(Base):
    """Effective access, the policy's answer: one row per lookup key a customer is granted, or refused for a
    reason worth telling (withheld, denied). `has_access` reads it by primary key. A public contract (README)."""

    __tablename__ = "effective_access"

    customer_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    lookup_key: Mapped[str] = mapped_column(String(80), primary_key=True)
    granted: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(String(40))
    sources: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    since: Mapped[datetime] = mapped_column(default=utcnow, doc="when this decision (granted, reason) began")
    computed_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The moment the clock alone may change the decision (an override expiring, a past_due grace ending):
    # the sweep recomputes rows whose moment has come.
    review_at: Mapped[datetime | None] = mapped_column(index=True)


class EffectiveAccessChange(Base):
    """Append-only history of effective access, with the cause of each change; ids only grow."""

    __tablename__ = "effective_access_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(String(255), index=True)
    lookup_key: Mapped[str] = mapped_column(String(80))
    change: Mapped[str] = mapped_column(String(10), doc="granted | revoked | updated (same access, new reason)")
    granted: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(String(40))
    previous_reason: Mapped[str | None] = mapped_column(String(40))
    sources: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    cause: Mapped[str] = mapped_column(String(255), doc="evt_… | ops:… | override:N[:revoked|:expired] | …")
    changed_at: Mapped[datetime] = mapped_column(default=utcnow)


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


class AccessFeedEntry(Base):
    """The published feed of access flips (`GET /v1/access-changes`): one row per `granted`/`revoked` change of
    `effective_access_changes`, numbered in commit order (see store/feed.py). Prunable, unlike the history."""

    __tablename__ = "access_feed"

    cursor: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    change_id: Mapped[int] = mapped_column(Integer, doc="effective_access_changes.id")
    customer_id: Mapped[str] = mapped_column(String(255))
    lookup_key: Mapped[str] = mapped_column(String(80))
    change: Mapped[str] = mapped_column(String(10), doc="granted | revoked")
    features: Mapped[list[str]] = mapped_column(JSON, default=list, doc="feature ids behind the change, if known")
    cause: Mapped[str] = mapped_column(String(255))
    changed_at: Mapped[datetime]


class AccessFeedState(Base):
    """One row: the last cursor handed out (its row lock orders the feed by commit) and what pruning removed."""

    __tablename__ = "access_feed_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_cursor: Mapped[int] = mapped_column(BigInteger, default=0)
    pruned_through: Mapped[int] = mapped_column(BigInteger, default=0, doc="cursors up to this one are deleted")


class DeliveryStatus(StrEnum):
    """Where an outbound access webhook stands: `pending` (not yet answered 2xx; retried), `delivered`, or
    `failed` (retried for ACCESS_WEBHOOK_RETRY_FOR_SECONDS without a 2xx: kept, replayable)."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class WebhookDelivery(Base):
    """The outbox of access webhooks: one row per published change and subscriber, written in the change's own
    transaction (so it exists exactly when the change does), drained per subscriber in id order."""

    __tablename__ = "webhook_deliveries"
    # The drain's head (`status = pending AND subscriber = … ORDER BY id`), the sweep's heads, the CLI's lists.
    __table_args__ = (Index("ix_webhook_deliveries_status_subscriber", "status", "subscriber", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subscriber: Mapped[str] = mapped_column(String(2048), doc="the subscriber's URL, as in ACCESS_WEBHOOK_URLS")
    # The change's id in effective_access_changes (no foreign key: that history may be pruned on its own).
    change_id: Mapped[int] = mapped_column(Integer)
    customer_id: Mapped[str] = mapped_column(String(255))
    lookup_key: Mapped[str] = mapped_column(String(80))
    type: Mapped[str] = mapped_column(String(40), doc="access.granted | access.revoked")
    body: Mapped[str] = mapped_column(Text, doc="the JSON sent, byte for byte the same at every attempt")
    status: Mapped[str] = mapped_column(String(10), default=DeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    pending_since: Mapped[datetime] = mapped_column(default=utcnow, doc="its retry window's start (replay resets it)")
    next_attempt_at: Mapped[datetime | None]
    last_attempt_at: Mapped[datetime | None]
    last_status: Mapped[int | None] = mapped_column(Integer, doc="the last answer's HTTP status; None: no answer")
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None]

    # Set in the change's transaction before either row is flushed: the unit of work inserts the change first
    # and fills `change_id` in, with no flush of its own.
    change: Mapped[EffectiveAccessChange] = relationship(
        primaryjoin=lambda: foreign(WebhookDelivery.change_id) == EffectiveAccessChange.id, lazy="raise"
    )

    @property
    def message_id(self) -> str:
        """`webhook-id`: one per change, the same at every attempt and replay, so subscribers can dedupe."""
        return f"msg_{self.change_id}"
