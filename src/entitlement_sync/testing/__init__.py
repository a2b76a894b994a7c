"""A stand-in for the part of Stripe that entitlement-sync touches: payload shapes, an in-memory model of
customers' entitlements, and an HTTP server speaking Stripe's API shapes. For our tests and benchmarks, and for
teams testing their own services against entitlement-sync. Never imported by the service itself.
"""

from .shapes import (
    active_entitlement,
    error_body,
    event,
    list_page,
    sign,
    subscription,
    summary_event,
)
from .simulator import FakeStripe, StripeSimulatorServer

__all__ = [
    "FakeStripe",
    "StripeSimulatorServer",
    "active_entitlement",
    "error_body",
    "event",
    "list_page",
    "sign",
    "subscription",
    "summary_event",
]
