"""Issue 11, end to end: the real processes (gunicorn, `dramatiq` workers, PostgreSQL, Redis, the simulated
Stripe over HTTP) through a workload of grants, revokes and reordered, duplicated deliveries, plus operator
grants and denials from the CLI; meanwhile a consumer follows `GET /v1/access-changes` (long polls) from the
start, and an `AccessClient` joins mid-run from a snapshot. Afterwards every follower's copy equals the
table (`effective_access`, granted rows).

An outbound-webhook subscriber (`ACCESS_WEBHOOK_URLS`) is down (503) for the first rounds, while changes
are published and wait in the outbox; it builds its copy from the signed messages alone. The feed consumer,
the client and the subscriber must all end equal to the table, and no customer's messages may reach the
subscriber out of order.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
from collections.abc import Callable

import pytest
import requests
from sqlalchemy import create_engine, func, select
from sqlalchemy.pool import NullPool

from entitlement_sync.client import AccessClient
from entitlement_sync.models import DeliveryStatus, EffectiveAccess, WebhookDelivery
from entitlement_sync.testing import FakeStripe, StripeSimulatorServer, WebhookSender
from tests.e2e.harness import API_KEY, READ_TOKEN, WEBHOOK_SECRET, Service, wait_until
from tests.e2e.invariants import Inspector, assert_invariants, delivered, record
from tests.e2e.workload import Workload
from tests.webhook_subscriber import Subscriber

pytestmark = pytest.mark.e2e

Copy = set[tuple[str, str]]  # the granted (customer, lookup key) pairs


class FeedConsumer:
    """What another team would write in twenty lines: snapshot, then long polls, applied in order."""

    def __init__(self, internal_url: str) -> None:
        self._url = internal_url
        self._http = requests.Session()
        self._http.headers["Authorization"] = f"Bearer {READ_TOKEN}"
        self.copy: Copy = set()
        self.applied = 0
        self._stopping = threading.Event()
        self._cursor = self._snapshot()
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def _snapshot(self) -> int:
        cursors, after = [], ""
        while True:
            page = self._get("/v1/access-snapshot", after_customer=after, limit=100)
            cursors.append(page["cursor"])
            self.copy |= {(row["customer"], row["lookup_key"]) for row in page["access"] if row["granted"]}
            if page["next_after_customer"] is None:
                return min(cursors)
            after = page["next_after_customer"]

    def _follow(self) -> None:
        while not self._stopping.is_set():
            try:
                page = self._get("/v1/access-changes", after=self._cursor, limit=200, wait=10)
            except requests.RequestException:
                self._stopping.wait(0.5)
                continue
            for change in page["changes"]:
                pair = (change["customer"], change["lookup_key"])
                self.copy.add(pair) if change["change"] == "granted" else self.copy.discard(pair)
                self.applied += 1
            self._cursor = page["next_cursor"]

    def _get(self, path: str, **params: object) -> dict:
        response = self._http.get(f"{self._url}{path}", params=params, timeout=30)
        response.raise_for_status()
        return response.json()

    def stop(self) -> None:
        self._stopping.set()


# Short pauses so that the subscriber's recovery shows within seconds; the sweep re-kicks every second.
QUICK_WEBHOOKS = {"ACCESS_WEBHOOK_MAX_PAUSE_SECONDS": "2", "SWEEP_INTERVAL_SECONDS": "1"}


def pending_deliveries(database_url: str) -> int:
    engine = create_engine(database_url, poolclass=NullPool)
    with engine.connect() as connection:
        count = connection.scalar(select(func.count()).where(WebhookDelivery.status == DeliveryStatus.PENDING))
    engine.dispose()
    return int(count or 0)


def table(database_url: str) -> Copy:
    engine = create_engine(database_url, poolclass=NullPool)
    with engine.connect() as connection:
        rows = connection.execute(
            select(EffectiveAccess.customer_id, EffectiveAccess.lookup_key).where(EffectiveAccess.granted)
        )
        copy = {(customer, key) for customer, key in rows}
    engine.dispose()
    return copy


def operator(service: Service, *arguments: str) -> None:
    """`entitlement-sync access grant|deny …` as an operator runs it, against the same database."""
    subprocess.run(
        [sys.executable, "-m", "entitlement_sync.cli", "access", *arguments, "--reason", "e2e", "--by", "e2e"],
        env=service.environment.variables(),
        check=True,
        capture_output=True,
    )


def test_a_feed_consumer_the_client_and_a_webhook_subscriber_end_equal_to_the_table(
    launch, inspector: Inspector, access_subscriber: Subscriber
) -> None:
    stripe = FakeStripe(API_KEY, seed=11)
    subscriber = access_subscriber
    subscriber.down()
    refused_while_down = 0
    with StripeSimulatorServer(stripe) as simulator:
        service = launch(simulator.url, ACCESS_WEBHOOK_URLS=subscriber.entry, **QUICK_WEBHOOKS)
        service.start_web(workers=2)
        service.start_worker(processes=2, threads=4)
        consumer = FeedConsumer(service.internal_url)
        workload = Workload(stripe, 120, seed=11)
        reordering = {"reorder_window": 30, "hold_back_share": 0.3, "duplicate_share": 0.10}
        url = f"{service.url}/webhooks/stripe"
        client: AccessClient | None = None

        def backlog() -> bool:
            return subscriber.requests >= 3 and pending_deliveries(service.environment.database_url) >= 10

        with WebhookSender(stripe, url, WEBHOOK_SECRET, seed=11, threads=8, **reordering) as sender:
            for round_index in workload.rounds(changes=220, events_per_round=40):
                assert sender.throttle(60, timeout=120)
                if round_index == 2:  # joins mid-run, from a snapshot of a table that is moving
                    client = AccessClient(service.internal_url, READ_TOKEN, wait_seconds=10)
                if round_index == 3:  # the subscriber comes back with a backlog waiting for it
                    wait_until(backlog, 60, "the down subscriber to be retried with a backlog behind")
                    refused_while_down = subscriber.requests
                    subscriber.up()
                if round_index in (1, 3):
                    customer = workload.customers[round_index]
                    operator(service, "grant", customer, "sso", "--until", "30d")
                    operator(service, "deny", customer, "api_access")
            assert sender.drain(180)
            accepted, undelivered = delivered(sender)
        assert not undelivered
        assert client is not None
        # Stripe's mirror equals Stripe; effective access differs from it only where the operator acted.
        operated = {workload.customers[1], workload.customers[3]}

        def converged() -> bool:
            now = inspector.snapshot(stripe, workload.customers, accepted)
            done = not (now.unfinished or now.mismatched or now.failed or now.missing)
            return done and set(now.effective_mismatched) <= operated

        wait_until(converged, 180, "the table to converge")
        final = inspector.snapshot(stripe, workload.customers, accepted)
        outside = {c: rows for c, rows in final.effective_mismatched.items() if c not in operated}
        assert_invariants(dataclasses.replace(final, effective_mismatched=outside))

        truth = table(service.environment.database_url)
        followers: dict[str, Callable[[], Copy]] = {
            "feed consumer": lambda: set(consumer.copy),
            "AccessClient": client.granted,
            "webhook subscriber": subscriber.granted,
        }
        for name, copy in followers.items():
            wait_until(lambda copy=copy: copy() == truth, 60, f"the {name}'s copy to equal the table")
            assert copy() == truth, name
        assert client.snapshots == 1 and client.stale == 0.0
        consumer.stop()
        client.close()
    assert len(truth) > 50 and consumer.applied > 100
    assert refused_while_down > 0  # it was down while changes were published, and they waited
    assert subscriber.out_of_order == [] and subscriber.rejected_signatures == 0
    record(
        "issue 11: feed consumer + AccessClient + webhook subscriber (down for 3 rounds), 120 customers, reordered",
        {
            "granted pairs": len(truth),
            "changes applied by the consumer": consumer.applied,
            "webhook messages received": len(subscriber.messages),
            "webhook requests refused while down": refused_while_down,
            "redeliveries dropped by webhook-id": subscriber.redeliveries,
        },
    )
