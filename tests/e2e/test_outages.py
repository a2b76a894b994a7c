"""Scenarios 11 and 12 of the fault suite: a Stripe incident longer than the queue's retry window converges with no
operator action, and events missed while the webhook endpoint was down are recovered in Stripe's real shapes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter

import pytest
from sqlalchemy import create_engine, func, select

from entitlement_sync.models import EventStatus, StripeEvent
from entitlement_sync.testing import FakeStripe, StripeSimulatorServer
from tests.conftest import TEST_DATABASE_URL
from tests.e2e.harness import API_KEY, Service, wait_until
from tests.e2e.invariants import assert_invariants, record
from tests.e2e.test_fault_injection import scenario, start  # noqa: F401 (a fixture)
from tests.real_shapes import subscription_event

pytestmark = pytest.mark.e2e

# The queue gives up within a second here (production: about 8 minutes); the sweep then waits 1 s, 2 s, 4 s...
SHORT_RETRIES = {
    "SYNC_MAX_RETRIES": "2",
    "SYNC_MIN_BACKOFF_MS": "50",
    "SYNC_MAX_BACKOFF_MS": "200",
    "SWEEP_INTERVAL_SECONDS": "1",
    "RETRY_UNAVAILABLE_FOR_SECONDS": "300",
    # Pauses 1, 2, 4, 8, 8 … s: however long the incident lasts on a loaded machine, an event is tried again
    # within 8 s of Stripe's return (the default doubles up to an hour).
    "RETRY_MAX_PAUSE_SECONDS": "8",
}


def most_waits(database_url: str) -> int:
    engine = create_engine(database_url)
    with engine.connect() as connection:
        found = connection.scalar(select(func.max(StripeEvent.waits))) or 0
    engine.dispose()
    return int(found)


def test_a_stripe_incident_longer_than_the_retry_window_converges_with_no_operator(launch, inspector):  # noqa: F811
    with scenario(120, seed=8, sender_url=start(launch, **SHORT_RETRIES)) as run:
        faults = run.stripe.faults
        peak_waiting, peak_waits, incident = 0, 0, 0.0
        for index in run.workload.rounds(changes=240, events_per_round=40):
            if index == 1:  # Stripe down: every call answered 503 or 429
                faults.server_error_status, faults.server_error_share, faults.rate_limit_share = 503, 0.5, 0.5
                incident_started = time.monotonic()
            if index == 4:
                wait_until(lambda: inspector.count(EventStatus.WAITING) >= 20, 60, "events waiting for Stripe")
                time.sleep(20)  # the incident outlasts several sweep rounds (pauses of 1, 2, 4, 8 s)
                peak_waiting = inspector.count(EventStatus.WAITING)
                peak_waits = most_waits(TEST_DATABASE_URL or "")
                faults.clear()  # the incident ends; nobody touches the service
                incident = time.monotonic() - incident_started
            run.throttle(max_pending=40)
        seconds, snapshot = run.finish(inspector)
        figures = run.figures(seconds, snapshot)
    assert peak_waiting >= 20 and snapshot.statuses[EventStatus.FAILED] == 0
    record(
        "11. Stripe incident (every call 503/429) longer than the queue's retry window",
        {
            **figures,
            "incident seconds": round(incident, 1),
            "queue retry window": "2 retries, 50..200 ms backoff",
            "events waiting at the end of the incident": peak_waiting,
            "most sweep waits for one event by the end of the incident": peak_waits,
            "faults injected": dict(faults.injected),
        },
    )


def recover(service: Service, *options: str) -> dict:
    """`entitlement-sync events recover --json ...` as an operator runs it: its own process."""
    command = [sys.executable, "-m", "entitlement_sync.cli", "events", "recover", *options, "--json"]
    done = subprocess.run(command, env=service.environment.variables(), capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout)


def billing_history(stripe: FakeStripe, customers: list[str], now: int) -> list[str]:
    """Customers sign up and change plans while nobody listens; the simulated account records the events, in
    Stripe's real shapes (prices and plans with decimal strings, a coupon with a float). Plus live-mode events,
    which a test-mode key ignores. Returns the ids of the live-mode events."""
    features = [stripe.create_feature(key) for key in ("api_access", "ai_assistant", "exports", "sso")]
    basic, pro = stripe.create_product(features[:1]), stripe.create_product(features)
    for n, customer in enumerate(customers):
        subscription = stripe.subscribe(customer, [basic], with_coupon=n % 2 == 0)
        if n % 3 == 0:
            stripe.change_products(subscription, [pro])
        if n % 7 == 0:
            stripe.cancel(subscription)
    live = []
    for n in range(0, len(customers), 10):
        body = subscription_event(
            "customer.subscription.updated", f"cus_live_{n}", event_id=f"evt_live_{n:04d}", created=now, livemode=True
        )
        stripe.events.record(body)
        live.append(body["id"])
    return live


def test_events_missed_while_the_endpoint_was_down_are_recovered_in_stripes_real_shapes(launch, inspector):  # noqa: F811
    stripe = FakeStripe(API_KEY, seed=9)
    customers = [f"cus_real_{n:04d}" for n in range(150)]
    with StripeSimulatorServer(stripe) as simulator:
        service = launch(simulator.url, STRIPE_MAX_REQUESTS_PER_SECOND="20")
        service.start_web(workers=2)
        service.start_worker(processes=2, threads=4)
        live = billing_history(stripe, customers, int(time.time()))
        logged = stripe.events.all()
        delivered = logged[: len(logged) // 5]  # then the endpoint went down
        assert all(service.deliver(json.dumps(body).encode()).ok for body in delivered)

        started = time.monotonic()
        dry = recover(service, "--since", "2h", "--dry-run")
        dry_seconds, started = time.monotonic() - started, time.monotonic()
        report = recover(service, "--since", "2h")
        recover_seconds = time.monotonic() - started
        every_event = {body["id"] for body in logged}
        seconds, snapshot = inspector.wait_for_convergence(stripe, customers, every_event, 120)
    assert_invariants(snapshot)
    counts = ("seen", "pages", "already_in_inbox", "stored", "ignored", "invalid")
    assert [dry[key] for key in counts] == [report[key] for key in counts]
    assert report["seen"] == len(logged) and report["already_in_inbox"] == len(delivered)
    assert report["ignored"] == len(live) and report["invalid"] == 0
    subscription_events = [body for body in logged[len(delivered) :] if body["type"].startswith("customer.subscr")]
    last = [body for body in subscription_events if not body["livemode"]][-1]  # live ones keep no payload
    assert set(inspector_payload(live[-1])) == {
        "id",
        "object",
        "type",
        "created",
        "livemode",
        "account",
        "envelope_only",
    }
    stored = inspector_payload(last["id"])
    assert stored == {**last, "pending_webhooks": stored["pending_webhooks"]}  # the JSON Stripe's API returned
    price = stored["data"]["object"]["items"]["data"][0]["price"]
    assert isinstance(price["unit_amount_decimal"], str)
    record(
        "12. recovery of real-shaped subscription events after the webhook endpoint was down",
        {
            "customers": len(customers),
            "events in Stripe's log": len(logged),
            "delivered before the endpoint went down": len(delivered),
            "recover --dry-run counts == run counts": {key: report[key] for key in counts},
            "seconds for recover --dry-run (a process of its own)": round(dry_seconds, 1),
            "seconds for recover (stores and enqueues; paced at 20 req/s)": round(recover_seconds, 1),
            "stripe calls": len(stripe.calls),
            "stripe answers": dict(Counter(call.status for call in stripe.calls)),
            "event statuses": dict(snapshot.statuses),
            "seconds to converge after recover returned": round(seconds, 1),
        },
    )


def inspector_payload(event_id: str) -> dict:
    engine = create_engine(TEST_DATABASE_URL or "")
    with engine.connect() as connection:
        payload = connection.scalar(select(StripeEvent.payload).where(StripeEvent.id == event_id))
    engine.dispose()
    assert isinstance(payload, dict)
    return payload
