"""The edges the use cases call, as small Protocols: adapters and test fakes both satisfy them."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Protocol

from .values import (
    AccessLine,
    CatalogFeature,
    CustomerState,
    EntitlementsRead,
    EventPage,
    ManualGrant,
    PostOutcome,
    ProductFeatureLink,
    StripeAccount,
    WebhookSubscriber,
)


class EntitlementSource(Protocol):
    def read_active_entitlements(self, customer_id: str) -> EntitlementsRead:
        """Every active entitlement, dated by Stripe's clock; raises CustomerNotFound when Stripe answers 404
        for the customer."""
        ...

    def customer_state(self, customer_id: str) -> CustomerState: ...


class EventSource(Protocol):
    def list_events_page(
        self, types: list[str], created_gte: int, undelivered: bool, starting_after: str | None = None
    ) -> EventPage: ...


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

    def enqueue_events(self, event_ids: Sequence[str], customers: Mapping[str, str | None] | None = None) -> None:
        """`enqueue_event` for each, in one round trip where the broker can; raises QueueUnavailable when the
        broker may not have taken them all. `customers`: the events' customers as stored, sent with their jobs
        to spare the worker a lookup (a job without one is looked up)."""

    def ping(self) -> None:
        """Raise QueueUnavailable unless the broker answers."""


class WebhookPoster(Protocol):
    def post(self, subscriber: WebhookSubscriber, message_id: str, body: str, timestamp: datetime) -> PostOutcome:
        """POST the signed message once; never raises for what the subscriber or the network did."""


class DeliveryQueue(Protocol):
    def kick(self, subscriber_url: str, delay_seconds: float = 0) -> None:
        """Ask a worker to drain the subscriber's pending deliveries; raises QueueUnavailable."""


class AccessExplainer(Protocol):
    """Every feature of a customer with its reason: effective access (`explain.Explainer`)."""

    def explain_customer(self, customer_id: str) -> list[AccessLine]: ...


class GrantSource(Protocol):
    """Grants and denials made outside Stripe (`overrides.Overrides`)."""

    def grants_of(self, customer_id: str) -> list[ManualGrant] | None:
        """The customer's grants, or None when this deployment has no grants at all."""


class Pacer(Protocol):
    rate: float
    shared: bool  # True when the budget is shared with other processes (through Redis)

    def __call__(self) -> None:
        """Block until the caller may send one request."""


class Telemetry(Protocol):
    """What happened, told to whoever counts it (Prometheus in the service; a recording fake in tests).

    Methods are named for the occurrence, take our vocabulary and low-cardinality codes only (never an id:
    ids belong in logs), and must never raise into the use case.
    """

    def webhook_answered(self, event_type: str, outcome: str, reason: str, seconds: float) -> None:
        """outcome: accepted | duplicate | ignored | rejected; reason: a short code ('' when accepted)."""

    def enqueue_failed(self, source: str) -> None:
        """The broker refused a job (source: receiver, for webhooks and replays | sweep); the event stays stored."""

    def breaker_changed(self, state: str) -> None:
        """The enqueue circuit breaker moved to closed | half_open | open."""

    def event_finished(self, event_type: str, outcome: str) -> None:
        """outcome: processed | failed | ignored | retrying (left queued for another attempt)."""

    def change_applied(self, since_created: float, since_received: float) -> None:
        """An event's change is in the table: seconds since Stripe created it and since we received it."""

    def customer_synced(self, result: str, seconds: float) -> None:
        """A fetch-and-apply finished: result applied | dropped (a later fetch won the race)."""

    def event_coalesced(self) -> None:
        """An event needed no call to Stripe: a fetch that started after it was stored already applied."""

    def access_changed(self, granted: int, revoked: int) -> None:
        """Rows granted and revoked by one applied sync."""

    def stripe_called(self, endpoint: str, status: str, seconds: float, rate_limited_reason: str | None) -> None:
        """One HTTP request to Stripe; status is the HTTP code or 'error' (timeout, connection)."""

    def pacer_waited(self, seconds: float) -> None:
        """A request waited this long for its slot in the shared Stripe budget."""

    def read_answered(self, endpoint: str, status: int, seconds: float) -> None:
        """The read API answered a request."""

    def long_poll(self, state: str) -> None:
        """A long poll of the access feed: waiting (it began to wait) | done (it stopped) | refused (every
        waiting slot of this process was taken, so it was answered at once)."""


class NoTelemetry:
    """Counts nothing: for tests and tools that do not care, and the default of every use case."""

    def webhook_answered(self, event_type: str, outcome: str, reason: str, seconds: float) -> None:
        pass

    def enqueue_failed(self, source: str) -> None:
        pass

    def breaker_changed(self, state: str) -> None:
        pass

    def event_finished(self, event_type: str, outcome: str) -> None:
        pass

    def change_applied(self, since_created: float, since_received: float) -> None:
        pass

    def customer_synced(self, result: str, seconds: float) -> None:
        pass

    def event_coalesced(self) -> None:
        pass

    def access_changed(self, granted: int, revoked: int) -> None:
        pass

    def stripe_called(self, endpoint: str, status: str, seconds: float, rate_limited_reason: str | None) -> None:
        pass

    def pacer_waited(self, seconds: float) -> None:
        pass

    def read_answered(self, endpoint: str, status: int, seconds: float) -> None:
        pass

    def long_poll(self, state: str) -> None:
        pass


class FeedWakeups(Protocol):
    """Wakes long polls of the access feed when a cursor past theirs may have committed."""

    def wait_past(self, cursor: int, timeout: float) -> None:
        """Return when a cursor after `cursor` may exist, or after at most `timeout` seconds (maybe sooner:
        the caller looks again either way)."""

    def close(self) -> None: ...
