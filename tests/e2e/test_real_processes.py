"""The real thing: gunicorn web, a separate `dramatiq` worker process, Redis and PostgreSQL, Stripe simulated
over HTTP. The simulator's billing model records the events, its sender delivers them over the network, and
answers come out of the read API."""

import json

import pytest

from entitlement_sync.testing import WebhookSender
from tests.e2e.harness import WEBHOOK_SECRET, wait_until

pytestmark = pytest.mark.e2e


def granted(service, customer):
    return {(item["feature"], item["lookup_key"]) for item in service.entitlements(customer)["entitlements"]}


def test_webhooks_flow_through_real_processes_into_the_read_api(service, simulator):
    service.start_web()
    service.start_worker(processes=2, threads=2)
    stripe = simulator.stripe
    api, ai = stripe.create_feature("api_access"), stripe.create_feature("ai_assistant")
    basic, pro = stripe.create_product([api]), stripe.create_product([api, ai])
    customers = [f"cus_e2e_{n:02d}" for n in range(20)]

    def converged():
        return all(granted(service, c) == stripe.truth(c) for c in customers)

    with WebhookSender(stripe, f"{service.url}/webhooks/stripe", WEBHOOK_SECRET) as sender:
        trial = stripe.subscribe(customers[0], [pro], trial_days=14, with_coupon=True)
        for n, customer in enumerate(customers[1:], start=1):
            stripe.subscribe(customer, [pro if n % 2 else basic], with_coupon=n % 3 == 0)
        assert sender.drain(30)
        assert {(d.status, json.loads(d.answer)["status"]) for d in sender.deliveries} == {(200, "accepted")}
        first = json.dumps(stripe.events.all()[0]).encode()
        assert service.deliver(first).json()["status"] == "duplicate"
        wait_until(converged, 60, "every customer's rows to match Stripe")

        # A trial ending into `paused` sends no summary event: the subscription events alone must revoke.
        before = len(stripe.events.all())
        stripe.end_trial(trial, into="paused")
        assert sender.drain(30)
    paused = ["customer.subscription.updated", "customer.subscription.paused"]
    assert [event["type"] for event in stripe.events.all()[before:]] == paused
    wait_until(lambda: granted(service, customers[0]) == set(), 60, "the paused trial to revoke access")
    assert service.entitlements(customers[0])["synced_at"] is not None
    assert service.http.get(f"{service.internal_url}/readyz", timeout=5).json()["checks"] == {
        "database": "ok",
        "broker": "ok",
    }
