"""The metrics each process counts, and the Telemetry port over them (`PrometheusTelemetry`)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ..redaction import without_password

PREFIX = "entitlement_sync"
REGISTRY = CollectorRegistry(auto_describe=True)

_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_CALLS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Freshness spans milliseconds (a live worker) to days (Stripe retries a delivery for up to 3 days).
_FRESHNESS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 14400.0, 86400.0)
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}


def _counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
    return Counter(f"{PREFIX}_{name}", doc, labels, registry=REGISTRY)


def _histogram(name: str, doc: str, buckets: tuple[float, ...], labels: tuple[str, ...] = ()) -> Histogram:
    return Histogram(f"{PREFIX}_{name}", doc, labels, buckets=buckets, registry=REGISTRY)


WEBHOOKS = _counter("webhooks", "Stripe webhooks answered, by type, outcome and reason", ("type", "outcome", "reason"))
WEBHOOK_SECONDS = _histogram("webhook_duration_seconds", "Verify, store and answer a webhook", _FAST, ("outcome",))
ENQUEUE_FAILURES = _counter("enqueue_failures", "Jobs the broker refused (the event stays stored)", ("source",))
BREAKER = Gauge(
    f"{PREFIX}_enqueue_breaker_state",
    "Enqueue circuit breaker: 0 closed, 1 half-open, 2 open (worst of the live processes)",
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
EVENTS_PROCESSED = _counter("events_processed", "Event processing attempts by type and outcome", ("type", "outcome"))
FRESH_CREATED = _histogram(
    "freshness_from_created_seconds", "From the event's `created` (Stripe's clock) to its change applied", _FRESHNESS
)
FRESH_RECEIVED = _histogram(
    "freshness_from_received_seconds", "From the event's arrival (received_at) to its change applied", _FRESHNESS
)
SYNC_SECONDS = _histogram("sync_duration_seconds", "Fetch a customer's entitlements, apply them", _CALLS, ("result",))
COALESCED = _counter("coalesced_events", "Events that needed no call to Stripe (calls saved)")
ACCESS_CHANGES = _counter("access_changes", "Entitlement rows granted or revoked", ("change",))
STRIPE_REQUESTS = _counter("stripe_requests", "HTTP requests to Stripe by endpoint and status", ("endpoint", "status"))
STRIPE_RATE_LIMITED = _counter(
    "stripe_rate_limited", "Stripe 429s by endpoint and Stripe-Rate-Limited-Reason", ("endpoint", "reason")
)
STRIPE_SECONDS = _histogram("stripe_request_duration_seconds", "Duration of requests to Stripe", _CALLS, ("endpoint",))
PACER_WAIT = _histogram("stripe_pacer_wait_seconds", "Time a request waited for its slot in the Stripe budget", _CALLS)
READ_SECONDS = _histogram("read_api_duration_seconds", "Read API answers", _FAST, ("endpoint", "status"))
WEBHOOK_DELIVERIES = _counter(
    "access_webhook_deliveries",
    "Posts of access webhooks to subscribers, by subscriber and outcome",
    ("subscriber", "outcome"),
)
WEBHOOK_WAIT = _histogram(
    "access_webhook_delivery_wait_seconds",
    "From a delivery written (or replayed) to its 2xx, by subscriber",
    _FRESHNESS,
    ("subscriber",),
)
LONG_POLLS = Gauge(
    f"{PREFIX}_access_feed_long_polls",
    "Long polls of the access feed waiting now (every live web process)",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
LONG_POLLS_REFUSED = _counter(
    "access_feed_long_polls_refused", "Long polls answered at once because every waiting slot was taken"
)


# Series that alerts read with increase(): they must exist at 0 before their first event, or the first
# increment is invisible to Prometheus.
for _source in ("receiver", "sweep"):
    ENQUEUE_FAILURES.labels(_source)
for _change in ("granted", "revoked"):
    ACCESS_CHANGES.labels(_change)


def declare_webhook_subscribers(urls: Iterable[str]) -> None:
    """Create each configured subscriber's delivery series at 0 (the alerts read them with increase())."""
    for url in urls:
        for outcome in ("delivered", "retrying", "failed"):
            WEBHOOK_DELIVERIES.labels(without_password(url), outcome)


def count_webhook_delivery(subscriber_url: str, outcome: str, waited_seconds: float) -> None:
    """A post to a subscriber ended: delivered (2xx) | retrying (anything else; it stays pending) | failed
    (retried past ACCESS_WEBHOOK_RETRY_FOR_SECONDS); a delivered one had waited this long since written."""
    shown = without_password(subscriber_url)  # a label is as public as a log line: never a password
    WEBHOOK_DELIVERIES.labels(shown, outcome).inc()
    if outcome == "delivered":
        WEBHOOK_WAIT.labels(shown).observe(max(waited_seconds, 0.0))


class PrometheusTelemetry:
    """The Telemetry port over the metrics above."""

    def webhook_answered(self, event_type: str, outcome: str, reason: str, seconds: float) -> None:
        WEBHOOKS.labels(event_type, outcome, reason).inc()
        WEBHOOK_SECONDS.labels(outcome).observe(seconds)

    def enqueue_failed(self, source: str) -> None:
        ENQUEUE_FAILURES.labels(source).inc()

    def breaker_changed(self, state: str) -> None:
        BREAKER.set(BREAKER_STATES.get(state, BREAKER_STATES["open"]))

    def event_finished(self, event_type: str, outcome: str) -> None:
        EVENTS_PROCESSED.labels(event_type, outcome).inc()

    def change_applied(self, since_created: float, since_received: float) -> None:
        FRESH_CREATED.observe(max(since_created, 0.0))
        FRESH_RECEIVED.observe(max(since_received, 0.0))

    def customer_synced(self, result: str, seconds: float) -> None:
        SYNC_SECONDS.labels(result).observe(seconds)

    def event_coalesced(self) -> None:
        COALESCED.inc()

    def access_changed(self, granted: int, revoked: int) -> None:
        ACCESS_CHANGES.labels("granted").inc(granted)
        ACCESS_CHANGES.labels("revoked").inc(revoked)

    def stripe_called(self, endpoint: str, status: str, seconds: float, rate_limited_reason: str | None) -> None:
        STRIPE_REQUESTS.labels(endpoint, status).inc()
        STRIPE_SECONDS.labels(endpoint).observe(seconds)
        if status == "429":
            STRIPE_RATE_LIMITED.labels(endpoint, _bounded(rate_limited_reason)).inc()

    def pacer_waited(self, seconds: float) -> None:
        PACER_WAIT.observe(seconds)

    def read_answered(self, endpoint: str, status: int, seconds: float) -> None:
        READ_SECONDS.labels(endpoint, str(status)).observe(seconds)

    def long_poll(self, state: str) -> None:
        if state == "waiting":
            LONG_POLLS.inc()
        elif state == "done":
            LONG_POLLS.dec()
        else:
            LONG_POLLS_REFUSED.inc()


def _bounded(reason: str | None) -> str:
    """Stripe's reasons are short slugs (`global-rate`, `endpoint-concurrency`); anything else is one label."""
    if not reason:
        return "unspecified"
    return reason if re.fullmatch(r"[a-z][a-z_-]{0,39}", reason) else "other"
