"""What the use cases speak and depend on: the values they share and the edges they call, as small Protocols.

Imports no adapter (no Stripe, Redis, Dramatiq or Flask): real adapters and test fakes both satisfy these.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

Clock = Callable[[], datetime]
Sleep = Callable[[float], None]
Retry = Callable[[Callable[[], T]], T]
"""Runs a call to Stripe, retrying what may pass (429, 5xx, timeouts); see `pacing.with_retries`."""


# --- values ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActiveEntitlement:
    """One feature a customer may use now, as Stripe's active-entitlements list says."""

    id: str
    feature_id: str
    lookup_key: str


@dataclass(frozen=True)
class CatalogFeature:
    id: str
    lookup_key: str
    name: str
    active: bool
    livemode: bool


@dataclass(frozen=True)
class ProductFeatureLink:
    id: str
    product_id: str
    feature: CatalogFeature


class CustomerState(StrEnum):
    """What `GET /v1/customers/{id}` says of a customer, for this key's account and mode."""

    EXISTS = "exists"
    DELETED = "deleted"  # `{"id": ..., "object": "customer", "deleted": true}`
    UNKNOWN = "unknown"  # 404: never a customer of this account and mode


@dataclass(frozen=True)
class StripeAccount:
    """`GET /v1/account`: whose key this is."""

    id: str
    name: str | None


@dataclass(frozen=True)
class StuckRule:
    """When an unfinished event counts as stuck (see `store.inbox.is_stuck`)."""

    received_grace: timedelta  # the receiver enqueues right after its commit; give it this long
    stuck_after: timedelta  # queued or processing this long: the job was lost or its worker died


# --- edges -----------------------------------------------------------------------------------------------


class EntitlementSource(Protocol):
    def list_active_entitlements(self, customer_id: str) -> list[ActiveEntitlement]:
        """Every active entitlement; raises CustomerNotFound when Stripe answers 404 for the customer."""
        ...

    def customer_state(self, customer_id: str) -> CustomerState: ...


class EventSource(Protocol):
    def list_events(self, types: list[str], created_gte: int, undelivered: bool) -> Iterator[dict[str, Any]]: ...


class StripeReader(EntitlementSource, EventSource, Protocol):
    """Everything the ops use cases read from Stripe."""

    def list_subscription_customers(self) -> Iterator[str]: ...

    def list_features(self) -> list[CatalogFeature]: ...

    def list_product_features(self, product_id: str) -> list[ProductFeatureLink]: ...

    def paced(self, before_call: Callable[[], None]) -> StripeReader:
        """The same reader, calling `before_call` (a rate pacer) before each request."""
        ...


class StripeProbe(EntitlementSource, Protocol):
    """What `doctor` asks Stripe."""

    def retrieve_account(self) -> StripeAccount:
        """Raises StripeAccountUnreadable when the key may not ask (restricted keys)."""
        ...

    def list_one_customer(self) -> str | None: ...


class DatabaseProbe(Protocol):
    """What `doctor` asks the database; each raises StorageUnavailable when it cannot be reached."""

    def revisions(self) -> tuple[str | None, str]:
        """(the schema's revision, the latest migration's)."""
        ...

    def a_known_customer(self) -> str | None:
        """A customer this database holds access rows for (the most recently synced), or None."""
        ...


class WebhookVerifier(Protocol):
    def verify(self, payload: bytes, header: str | None) -> None:
        """Raise InvalidWebhook unless `header` is a valid Stripe-Signature of the raw `payload`."""


class JobQueue(Protocol):
    def enqueue_event(self, event_id: str) -> None:
        """Hand the event to a worker; raises QueueUnavailable when the broker cannot take it."""

    def ping(self) -> None:
        """Raise QueueUnavailable unless the broker answers."""


class Pacer(Protocol):
    rate: float
    shared: bool  # True when the budget is shared with other processes (through Redis)

    def __call__(self) -> None:
        """Block until the caller may send one request."""
