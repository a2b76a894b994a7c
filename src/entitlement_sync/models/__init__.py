"""The tables, one module per area; everything is importable from here. `entitlements` and `effective_access`
are public contracts (see README): change them only with a migration and a note."""

from .access import (
    AccessChange,
    AccessChangeKind,
    AccessOverride,
    EffectiveAccess,
    EffectiveAccessChange,
    Entitlement,
    Feature,
    OverrideKind,
    ProductFeature,
    Subscription,
)
from .base import NAMING_CONVENTION, Base, UTCDateTime, utcnow
from .feed import AccessFeedEntry, AccessFeedState, DeliveryStatus, WebhookDelivery
from .inbox import (
    CLAIMABLE,
    UNFINISHED,
    CustomerSyncState,
    EventAttempt,
    EventStatus,
    EventStatusCount,
    EventStatusDelta,
    PeriodicRun,
    StripeEvent,
    SyncCheckpoint,
)

__all__ = [
    "NAMING_CONVENTION",
    "utcnow",
    "UTCDateTime",
    "Base",
    "EventStatus",
    "UNFINISHED",
    "CLAIMABLE",
    "StripeEvent",
    "EventAttempt",
    "CustomerSyncState",
    "SyncCheckpoint",
    "EventStatusCount",
    "EventStatusDelta",
    "PeriodicRun",
    "AccessChangeKind",
    "Entitlement",
    "AccessChange",
    "Subscription",
    "Feature",
    "ProductFeature",
    "OverrideKind",
    "AccessOverride",
    "EffectiveAccess",
    "EffectiveAccessChange",
    "AccessFeedEntry",
    "AccessFeedState",
    "DeliveryStatus",
    "WebhookDelivery",
]
