"""The access tables: Stripe's entitlements mirrored, the catalog, subscriptions, overrides, and effective access
with the history of both. `entitlements` and `effective_access` are public contracts (README): change them only
with a migration and a note."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, BigInteger, Boolean, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, utcnow


class AccessChangeKind(StrEnum):
    GRANTED = "granted"
    REVOKED = "revoked"


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
