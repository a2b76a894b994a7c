"""The real thing: gunicorn web, a separate `dramatiq` worker process, Redis and PostgreSQL, Stripe simulated
over HTTP. Webhooks go in over the network, answers come out of the read API."""

import json

import pytest

from entitlement_sync.testing import active_entitlement, event, subscription, summary_event
from tests.e2e.harness import wait_until

pytestmark = pytest.mark.e2e


def granted(service, customer):
    return {(item["feature"], item["lookup_key"]) for item in service.entitlements(customer)["entitlements"]}


def test_webhooks_flow_through_real_processes_into_the_read_api(service, simulator):
    service.start_web()
    service.start_worker(processes=2, threads=2)
    stripe = simulator.stripe
    customers = [f"cus_e2e_{n:02d}" for n in range(20)]
    for n, customer in enumerate(customers):
        stripe.set_entitlements(
            customer, [("feat_api", "api_access")] + ([("feat_ai", "ai_assistant")] if n % 2 else [])
        )

    first = [summary_event(c, [active_entitlement("feat_api", "api_access")]) for c in customers]
    answers = [service.deliver(json.dumps(payload).encode()) for payload in first]
    assert {(a.status_code, a.json()["status"]) for a in answers} == {(200, "accepted")}
    assert service.deliver(json.dumps(first[0]).encode()).json()["status"] == "duplicate"

    def converged():
        return all(granted(service, c) == stripe.truth(c) for c in customers)

    wait_until(converged, 60, "every customer's rows to match Stripe")

    # A cancellation: the subscription event alone (no summary) must revoke.
    stripe.set_entitlements(customers[0], [])
    cancel = event("customer.subscription.deleted", subscription("sub_e2e", customers[0], status="canceled"))
    assert service.deliver(json.dumps(cancel).encode()).json()["status"] == "accepted"
    wait_until(lambda: granted(service, customers[0]) == set(), 60, "the cancellation to revoke access")
    assert service.entitlements(customers[0])["synced_at"] is not None
    assert service.http.get(f"{service.internal_url}/readyz", timeout=5).json()["checks"] == {
        "database": "ok",
        "broker": "ok",
    }
