"""How each process family exposes its metrics (multiprocess files or this process's registry), and the gauges
read from SQL at scrape time."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path

from prometheus_client import CollectorRegistry, multiprocess, values
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .. import store
from ..db import SessionFactory
from ..errors import QueueUnavailable
from ..ports import JobQueue
from ..reconcile import CHECKPOINT
from ..redaction import without_password
from .metrics import PREFIX, REGISTRY


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
