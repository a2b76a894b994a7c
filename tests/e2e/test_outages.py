"""Scenarios 8 and 9 of the fault suite: a Stripe incident longer than the queue's retry window converges with no
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

from entitlement_sync.events import SUBSCRIPTION_TYPES
from entitlement_sync.models import EventStatus, StripeEvent
from entitlement_sync.testing import FakeStripe, StripeSimulatorServer
from tests.conftest import TEST_DATABASE_URL
from tests.e2e.harness import API_KEY, Service, wait_until
from tests.e2e.invariants import assert_invariants, record
from tests.e2e.test_fault_injection import inspector, scenario, start  # noqa: F401 (a fixture)
from tests.e2e.workload import PLANS
from tests.real_shapes import subscription_event

pytestmark = pytest.mark.e2e

# The queue gives up within a second here (production: about 8 minutes); the sweep then waits 1 s, 2 s, 4 s...
SHORT_RETRIES = {
    "SYNC_MAX_RETRIES": "2",
    "SYNC_MIN_BACKOFF_MS": "50",
    "SYNC_MAX_BACKOFF_MS": "200",
    "SWEEP_INTERVAL_SECONDS": "1",
    "RETRY_UNAVAILABLE_FOR_SECONDS": "300",
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
        for index, batch in enumerate(run.workload.batches(changes=240, batch_size=40)):
            if index == 1:  # Stripe down: every call answered 503 or 429
                faults.server_error_status, faults.server_error_share, faults.rate_limit_share = 503, 0.5, 0.5
                incident_started = time.monotonic()
            run.sender.send(batch)
            run.sender.throttle(max_pending=40)
            if index == 3:
                wait_until(lambda: inspector.count(EventStatus.WAITING) >= 20, 60, "events waiting for Stripe")
                time.sleep(max(0.0, 12 - (time.monotonic() - incident_started)))
                peak_waiting = inspector.count(EventStatus.WAITING)
                peak_waits = most_waits(TEST_DATABASE_URL or "")
                faults.clear()  # the incident ends; nobody touches the service
                incident = time.monotonic() - incident_started
        stats, seconds, snapshot = run.finish(inspector)
    assert peak_waiting >= 20 and snapshot.statuses[EventStatus.FAILED] == 0
    record(
        "8. Stripe incident (every call 503/429) longer than the queue's retry window",
        {
            **run.figures(stats, seconds, snapshot),
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


def real_shaped_history(stripe: FakeStripe, customers: list[str], now: int) -> list[dict]:
    """Plan changes in Stripe, each with a subscription event in Stripe's real shape (prices with decimal strings,
    a coupon with a float), plus live-mode events that a test-mode key ignores."""
    types = sorted(SUBSCRIPTION_TYPES)
    sent = []
    for n, customer in enumerate(customers):
        stripe.set_entitlements(customer, PLANS[list(PLANS)[n % len(PLANS)]])  # also logs a summary event
        for k in range(3):
            body = subscription_event(
                types[(n + k) % len(types)],
                customer,
                event_id=f"evt_real_{n:04d}_{k}",
                created=now - 1800 + n,
                livemode=k == 2 and n % 10 == 0,
            )
            stripe.events.record(body)
            sent.append(body)
    return sent


def test_events_missed_while_the_endpoint_was_down_are_recovered_in_stripes_real_shapes(launch, inspector):  # noqa: F811
    stripe = FakeStripe(API_KEY, seed=9)
    customers = [f"cus_real_{n:04d}" for n in range(150)]
    with StripeSimulatorServer(stripe) as simulator:
        service = launch(simulator.url, STRIPE_MAX_REQUESTS_PER_SECOND="20")
        service.start_web(workers=2)
        service.start_worker(processes=2, threads=4)
        sent = real_shaped_history(stripe, customers, int(time.time()))
        delivered = sent[: len(sent) // 5]  # then the endpoint went down
        assert all(service.deliver(json.dumps(body).encode()).ok for body in delivered)

        started = time.monotonic()
        dry = recover(service, "--since", "2h", "--dry-run")
        dry_seconds, started = time.monotonic() - started, time.monotonic()
        report = recover(service, "--since", "2h")
        recover_seconds = time.monotonic() - started
        every_event = {body["id"] for body in stripe.events.all()}
        seconds, snapshot = inspector.wait_for_convergence(stripe, customers, every_event, 120)
    assert_invariants(snapshot)
    counts = ("seen", "pages", "already_in_inbox", "stored", "ignored", "invalid")
    assert [dry[key] for key in counts] == [report[key] for key in counts]
    assert report["seen"] == len(every_event) and report["already_in_inbox"] == len(delivered)
    assert report["ignored"] > 0 and report["invalid"] == 0
    last = sent[-1]
    stored = inspector_payload(last["id"])
    assert stored == {**last, "pending_webhooks": 1}  # exactly the JSON Stripe's API returned
    price = stored["data"]["object"]["items"]["data"][0]["price"]
    assert price["unit_amount_decimal"] == "2000"
    record(
        "9. recovery of real-shaped subscription events after the webhook endpoint was down",
        {
            "customers": len(customers),
            "events in Stripe's log": len(every_event),
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
