"""What the use cases speak and depend on: the values they share (`values`) and the edges they call, as small
Protocols (`edges`). Import every name from here.

Imports no adapter (no Stripe, Redis, Dramatiq or Flask): real adapters and test fakes both satisfy these.
"""

from __future__ import annotations

from .edges import (
    AccessExplainer,
    DatabaseProbe,
    DeliveryQueue,
    EntitlementSource,
    EventSource,
    FeedWakeups,
    GrantSource,
    JobQueue,
    NoTelemetry,
    Pacer,
    StripeProbe,
    StripeReader,
    Telemetry,
    WebhookPoster,
    WebhookVerifier,
)
from .values import (
    AccessLine,
    ActiveEntitlement,
    CatalogFeature,
    Clock,
    CustomerState,
    EntitlementsRead,
    EventPage,
    ManualGrant,
    PostOutcome,
    ProductFeatureLink,
    Retry,
    Sleep,
    StripeAccount,
    StuckRule,
    WaitRule,
    WebhookSubscriber,
)

__all__ = [
    "AccessExplainer",
    "AccessLine",
    "ActiveEntitlement",
    "CatalogFeature",
    "Clock",
    "CustomerState",
    "DatabaseProbe",
    "DeliveryQueue",
    "EntitlementSource",
    "EntitlementsRead",
    "EventPage",
    "EventSource",
    "FeedWakeups",
    "GrantSource",
    "JobQueue",
    "ManualGrant",
    "NoTelemetry",
    "Pacer",
    "PostOutcome",
    "ProductFeatureLink",
    "Retry",
    "Sleep",
    "StripeAccount",
    "StripeProbe",
    "StripeReader",
    "StuckRule",
    "Telemetry",
    "WaitRule",
    "WebhookPoster",
    "WebhookSubscriber",
    "WebhookVerifier",
]
