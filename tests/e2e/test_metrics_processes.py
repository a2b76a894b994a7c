"""Metrics across real processes: two gunicorn web processes and two Dramatiq worker processes, each event
counted exactly once, each access webhook once per subscriber, and every metric the dashboard and the alerts
name exported by one of the two targets."""

from __future__ import annotations

import json

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from entitlement_sync.tasks import PROCESS_EVENT
from entitlement_sync.testing import active_entitlement
from tests.e2e.harness import wait_until
from tests.fakes import summary_signal
from tests.integration.test_dashboards_and_alerts import series_the_app_must_export
from tests.webhook_subscriber import Subscriber

pytestmark = pytest.mark.e2e


def scrape(url: str) -> list[tuple[str, dict[str, str], float]]:
    response = requests.get(url, timeout=10)
    response.raise_for_status()
    families = text_string_to_metric_families(response.text)
    return [(sample.name, sample.labels, sample.value) for family in families for sample in family.samples]


def total(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    wanted = labels.items()
    return sum(value for sample, have, value in samples if sample == name and wanted <= have.items())


def test_each_webhook_and_event_is_counted_once_across_processes(launch, simulator, access_subscriber: Subscriber):
    service = launch(simulator.url, ACCESS_WEBHOOK_URLS=access_subscriber.entry)
    service.start_web(workers=2)
    service.start_worker(processes=2, threads=2)
    worker_metrics = f"http://127.0.0.1:{service.environment.worker_metrics_port}/metrics"
    customers = [f"cus_metrics_{n:02d}" for n in range(12)]
    for customer in customers:
        simulator.stripe.set_entitlements(customer, [("feat_api", "api_access")])
    simulator.stripe.fail_next(429)  # one rate-limited call: its job is retried, its event counted once
    # Incomplete payloads (`has_more: true`): each event fetches, so Stripe's metrics are exercised too.
    events = [summary_signal(c, [active_entitlement("feat_api", "api_access")]) for c in customers]
    for payload in events:
        assert service.deliver(json.dumps(payload).encode()).json()["status"] == "accepted"
    assert service.deliver(json.dumps(events[0]).encode()).json()["status"] == "duplicate"

    def worker_counted_all() -> bool:
        samples = scrape(worker_metrics)
        return total(samples, "entitlement_sync_events_processed_total", outcome="processed") == len(customers)

    wait_until(worker_counted_all, 60, "the workers' metrics to count every event")
    wait_until(lambda: len(access_subscriber.granted()) == len(customers), 60, "every grant's access webhook")
    assert service.entitlements(customers[0])["entitlements"]
    web, worker = scrape(f"{service.internal_url}/metrics"), scrape(worker_metrics)

    assert total(web, "entitlement_sync_webhooks_total", outcome="accepted") == len(customers)
    assert total(web, "entitlement_sync_webhooks_total", outcome="duplicate") == 1
    assert total(worker, "entitlement_sync_freshness_from_received_seconds_count") == len(customers)
    assert total(worker, "entitlement_sync_stripe_requests_total", endpoint="active_entitlements", status="200") >= 1
    assert total(worker, "entitlement_sync_events_processed_total", outcome="retrying") == 1
    assert total(worker, "entitlement_sync_stripe_rate_limited_total", reason="global-rate") == 1
    # Dramatiq's own, on the same target (the access webhooks' jobs are another actor's).
    assert total(worker, "dramatiq_messages_total", actor_name=PROCESS_EVENT) == len(customers) + 1
    # Web metrics stay on the web target and worker metrics on the worker's: nothing is exported twice.
    assert total(worker, "entitlement_sync_webhooks_total") == 0
    assert total(web, "entitlement_sync_events_processed_total") == 0

    # The access feed (from SQL, on the web target) and the webhooks (posted and counted by the workers).
    url = access_subscriber.url
    assert total(web, "entitlement_sync_access_feed_changes_total") == len(customers)
    pending = "entitlement_sync_access_webhooks_pending"
    assert any(sample == pending and labels == {"subscriber": url} for sample, labels, _ in web)
    wait_until(
        lambda: total(scrape(f"{service.internal_url}/metrics"), pending, subscriber=url) == 0, 30, "none pending"
    )
    wait_until(
        lambda: (
            total(scrape(worker_metrics), "entitlement_sync_access_webhook_deliveries_total", subscriber=url)
            == len(customers)
        ),
        30,
        "the workers to count each access webhook",
    )
    worker = scrape(worker_metrics)
    assert total(worker, "entitlement_sync_access_webhook_deliveries_total", outcome="delivered") == len(customers)
    assert total(worker, "entitlement_sync_access_webhook_delivery_wait_seconds_count") == len(customers)

    named = series_the_app_must_export()
    exported = {sample for sample, _, _ in web + worker}
    assert not named - exported, f"not exported by either target: {sorted(named - exported)}"
