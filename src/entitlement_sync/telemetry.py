"""prometheus_client's one home: the metrics, the Telemetry port over them, and how each process exposes them.

Counted once across processes: each process family writes its own prometheus multiprocess directory
(`METRICS_DIR/web` for the gunicorn processes, `METRICS_DIR/worker` for the Dramatiq processes), and each
directory is exposed by exactly one endpoint: the web's `/metrics`, and the worker's exposition server
(Dramatiq's Prometheus middleware, on `WORKER_METRICS_PORT`). Web and worker need not share a filesystem
(separate containers, separate hosts), each family wipes only its own directory when it starts, and
Prometheus adds the instances up. Without a directory (tests, `dev`) the metrics live in this process.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess, values
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from . import store
from .db import SessionFactory
from .errors import QueueUnavailable
from .ports import JobQueue
from .reconcile import CHECKPOINT
from .settings import without_password

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


# --- exposition -------------------------------------------------------------------------------------------


def multiprocess_mode() -> bool:
    """True when this process writes its metrics to files (PROMETHEUS_MULTIPROC_DIR was set before import)."""
    return bool(getattr(values.ValueClass, "_multiprocess", False))


def expose_process_metrics(registry: CollectorRegistry) -> None:
    """Add this process family's metrics to a registry being exposed (the web's `/metrics`)."""
    if multiprocess_mode():
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # every process of the family, dead ones' counters too
    else:
        registry.register(_Forward(REGISTRY))


class _Forward(Collector):
    def __init__(self, source: CollectorRegistry) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        yield from self._source.collect()


def prepare_metrics_dir(metrics_dir: str, family: str) -> dict[str, str]:
    """Empty `metrics_dir/family` for a fresh start of that family; the variables its processes need.

    Call before the processes start (prometheus_client picks its mode at import). Only `*.db` files are
    removed: a mistyped METRICS_DIR must never cost anything else.
    """
    directory = Path(metrics_dir) / family
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    return {"PROMETHEUS_MULTIPROC_DIR": str(directory)}


def process_exited(pid: int) -> None:
    """Drop a dead process's live gauges (gunicorn's child_exit); its counters stay counted."""
    if multiprocess_mode():
        multiprocess.mark_process_dead(pid, os.environ.get("PROMETHEUS_MULTIPROC_DIR"))  # type: ignore[no-untyped-call]


class ReconcileCollector(Collector):
    """The last `sync all` run's drift, read from its checkpoint: it runs in an operator's short-lived process,
    whose own counters nobody scrapes, so SQL is where its numbers last."""

    def __init__(self, new_session: SessionFactory) -> None:
        self._new_session = new_session

    def collect(self) -> Iterator[Metric]:
        with self._new_session() as session:
            checkpoint = store.checkpoints.get_checkpoint(session, CHECKPOINT)
        drift = GaugeMetricFamily(
            f"{PREFIX}_reconcile_drift", "Changes (and errors) found by the last `sync all` run", labels=["change"]
        )
        checked = GaugeMetricFamily(f"{PREFIX}_reconcile_checked_customers", "Customers checked by the last run")
        finished = GaugeMetricFamily(
            f"{PREFIX}_reconcile_last_finished_timestamp_seconds", "When the last `sync all` finished (0: never)"
        )
        for change in ("granted", "revoked", "errors"):
            drift.add_metric([change], getattr(checkpoint, change, 0) if checkpoint else 0)
        checked.add_metric([], checkpoint.checked if checkpoint else 0)
        done = checkpoint.finished_at if checkpoint else None
        finished.add_metric([], done.timestamp() if done else 0.0)
        yield from (drift, checked, finished)


class DeliveryCollector(Collector):
    """The outbox of access webhooks, from SQL, per subscriber: how many deliveries wait, and how long the
    oldest has waited. Every configured subscriber has its series (0 when nothing waits); one removed from
    ACCESS_WEBHOOK_URLS shows while rows of its own are pending."""

    def __init__(self, new_session: SessionFactory, clock: Callable[[], datetime], urls: Iterable[str]) -> None:
        self._new_session = new_session
        self._clock = clock
        self._urls = list(urls)

    def collect(self) -> Iterator[Metric]:
        with self._new_session() as session:
            waiting = store.deliveries.pending_by_subscriber(session)
        pending = GaugeMetricFamily(
            f"{PREFIX}_access_webhooks_pending", "Access webhook deliveries not yet answered 2xx", labels=["subscriber"]
        )
        age = GaugeMetricFamily(
            f"{PREFIX}_access_webhooks_oldest_pending_age_seconds",
            "Since the oldest pending delivery was written or replayed (0 when none)",
            labels=["subscriber"],
        )
        now = self._clock()
        for url in dict.fromkeys([*self._urls, *sorted(waiting)]):
            count, oldest = waiting.get(url, (0, None))
            shown = [without_password(url)]
            pending.add_metric(shown, count)
            age.add_metric(shown, max((now - oldest).total_seconds(), 0.0) if oldest else 0.0)
        yield from (pending, age)


class FeedCollector(Collector):
    """The access feed's cursors, from SQL: counters, since cursors only grow (a restore from a backup is the
    reset Prometheus' rate() already allows for)."""

    def __init__(self, new_session: SessionFactory) -> None:
        self._new_session = new_session

    def collect(self) -> Iterator[Metric]:
        with self._new_session() as session:
            last, pruned = store.feed.bounds(session)
        yield CounterMetricFamily(
            f"{PREFIX}_access_feed_changes", "Changes published to the access feed (its last cursor)", value=last
        )
        yield CounterMetricFamily(
            f"{PREFIX}_access_feed_pruned",
            "Feed cursors pruned (a consumer whose cursor is at or below this gets 410 and re-snapshots)",
            value=pruned,
        )


class ServiceCollector(Collector):
    """This web process's view of the service: does the broker answer a ping now (a Redis that is down shows
    here even while no webhook arrives to fail on it), the Stripe key's mode, and the workers' Stripe budget."""

    def __init__(self, queue: JobQueue, livemode: bool | None, budget: float) -> None:
        self._queue = queue
        self._livemode = livemode
        self._budget = budget

    def collect(self) -> Iterator[Metric]:
        try:
            self._queue.ping()
            up = 1.0
        except QueueUnavailable:
            up = 0.0
        yield GaugeMetricFamily(f"{PREFIX}_broker_up", "1 when the broker answered this scrape's ping", value=up)
        mode = {True: 1.0, False: 0.0, None: -1.0}[self._livemode]
        yield GaugeMetricFamily(f"{PREFIX}_stripe_livemode", "1 live key, 0 test key, -1 unknown", value=mode)
        yield GaugeMetricFamily(
            f"{PREFIX}_stripe_budget_requests_per_second",
            "STRIPE_MAX_REQUESTS_PER_SECOND, the workers' shared budget (0: unpaced)",
            value=self._budget,
        )
