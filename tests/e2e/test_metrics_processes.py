"""Metrics across real processes: two gunicorn web processes and two Dramatiq worker processes, each event
counted exactly once, and every metric the dashboard and the alerts name exported by one of the two targets."""

from __future__ import annotations

import json

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from entitlement_sync.testing import active_entitlement
from tests.e2e.harness import wait_until
from tests.fakes import summary_signal
from tests.integration.test_dashboards_and_alerts import OUR_METRIC, alert_rules, dashboard_queries

pytestmark = pytest.mark.e2e


def scrape(url: str) -> list[tuple[str, dict[str, str], float]]:
    response = requests.get(url, timeout=10)
    response.raise_for_status()
    families = text_string_to_metric_families(response.text)
    return [(sample.name, sample.labels, sample.value) for family in families for sample in family.samples]


def total(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    wanted = labels.items()
    return sum(value for sample, have, value in samples if sample == name and wanted <= have.items())


def test_each_webhook_and_event_is_counted_once_across_processes(service, simulator):
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
    assert service.entitlements(customers[0])["entitlements"]
    web, worker = scrape(f"{service.internal_url}/metrics"), scrape(worker_metrics)

    assert total(web, "entitlement_sync_webhooks_total", outcome="accepted") == len(customers)
    assert total(web, "entitlement_sync_webhooks_total", outcome="duplicate") == 1
    assert total(worker, "entitlement_sync_freshness_from_received_seconds_count") == len(customers)
    assert total(worker, "entitlement_sync_stripe_requests_total", endpoint="active_entitlements", status="200") >= 1
    assert total(worker, "entitlement_sync_events_processed_total", outcome="retrying") == 1
    assert total(worker, "entitlement_sync_stripe_rate_limited_total", reason="global-rate") == 1
    assert total(worker, "dramatiq_messages_total") == len(customers) + 1  # Dramatiq's own, on the same target
    # Web metrics stay on the web target and worker metrics on the worker's: nothing is exported twice.
    assert total(worker, "entitlement_sync_webhooks_total") == 0
    assert total(web, "entitlement_sync_events_processed_total") == 0

    named = {name for expr in dashboard_queries() for name in OUR_METRIC.findall(expr)}
    named |= {name for rule in alert_rules() for name in OUR_METRIC.findall(rule["expr"])}
    exported = {sample for sample, _, _ in web + worker}
    assert not named - exported, f"not exported by either target: {sorted(named - exported)}"
