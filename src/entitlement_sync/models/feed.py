"""What is published: the access feed and the outbox of access webhooks."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, BigInteger, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, foreign, mapped_column, relationship

from .access import EffectiveAccessChange
from .base import Base, utcnow


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
