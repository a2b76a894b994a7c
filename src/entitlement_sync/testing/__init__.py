"""A stand-in for the part of Stripe that entitlement-sync touches: for our tests, benchmarks and
demo, and for teams testing their own services against entitlement-sync. Never imported by the service itself.

- `FakeStripe`: a simulated account (features, products, customers, subscriptions), its derived entitlements,
  the events each change causes, and the API logic (`handle`) with fault knobs (`faults`);
- `StripeSimulatorServer`: that API over HTTP on 127.0.0.1 and a free port;
- `WebhookSender`: signs and delivers the events to a webhook URL, with retries, duplicates and reordering;
- `shapes`: Stripe's JSON shapes and the `Stripe-Signature` header (`sign`).

See docs/simulator.md.
"""

from .faults import ApiFaults, TokenBucket
from .model import BillingModel
from .objects import GRANTING_STATUSES, SimulationError
from .shapes import (
    active_entitlement,
    error_body,
    event,
    list_page,
    sign,
    sign_with_secrets,
    subscription,
    summary_event,
)
from .simulator import Call, FakeStripe, StripeSimulatorServer
from .webhooks import DeliveryRecord, SenderStats, WebhookSender

__all__ = [
    "GRANTING_STATUSES",
    "ApiFaults",
    "BillingModel",
    "Call",
    "DeliveryRecord",
    "FakeStripe",
    "SenderStats",
    "SimulationError",
    "StripeSimulatorServer",
    "TokenBucket",
    "WebhookSender",
    "active_entitlement",
    "error_body",
    "event",
    "list_page",
    "sign",
    "sign_with_secrets",
    "subscription",
    "summary_event",
]
