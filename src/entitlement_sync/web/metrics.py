"""GET /metrics in Prometheus' text format: the inbox as SQL sees it, so every web process reports the same
truth (per-process counters would need gunicorn's multiprocess mode and still miss the workers).

A scrape never counts `stripe_events`: the counts are kept by triggers as events change (store.counts), and
the oldest unfinished event is found through the (status, …) index among the few unfinished ones.
"""

from __future__ import annotations

from collections.abc import Iterator

from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .. import store
from ..db import transaction
from ..models import EventStatus, utcnow
from ..telemetry import DeliveryCollector, FeedCollector, ReconcileCollector, ServiceCollector, expose_process_metrics
from ._container import container

metrics = Blueprint("metrics", __name__)


class InboxCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        with transaction(container().new_session) as session:
            store.counts.fold_event_counts(session)
            counts = store.counts.event_counts(session)
            oldest = store.inbox.oldest_unfinished_received_at(session)
        events = GaugeMetricFamily(
            "entitlement_sync_events", "Stored Stripe events by processing status", labels=["status"]
        )
        for status in dict.fromkeys([*EventStatus, *sorted(counts)]):
            events.add_metric([status], counts.get(status, 0))
        yield events
        age = 0.0
        if oldest is not None:
            age = (utcnow() - oldest).total_seconds()
        yield GaugeMetricFamily(
            "entitlement_sync_oldest_unfinished_event_age_seconds",
            "Age of the oldest event not yet processed, failed or ignored (0 when none)",
            value=max(age, 0.0),
        )


@metrics.get("/metrics")
def prometheus_metrics() -> Response:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(InboxCollector())
    # What the processes counted (this host's web processes; the workers expose theirs on their own port),
    # the last `sync all`'s drift from SQL, and whether the broker answers.
    expose_process_metrics(registry)
    registry.register(ReconcileCollector(container().new_session))
    settings = container().settings
    registry.register(DeliveryCollector(container().new_session, utcnow, [s.url for s in settings.access_webhooks]))
    registry.register(FeedCollector(container().new_session))
    registry.register(ServiceCollector(container().queue, settings.livemode, settings.stripe_requests_per_second))
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
