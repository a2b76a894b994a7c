"""Outbound access webhooks through the real processes: gunicorn, `dramatiq` workers, PostgreSQL and Redis,
Stripe simulated. Customers' billing changes round by round (sign-ups, plan changes, cancellations, pauses,
deleted customers, a lookup key reused) while the webhooks Stripe sends arrive duplicated and reordered; the
access subscriber is down (503) for the first part of the run. At the end its copy, built from the signed
messages alone, equals the table, and no customer's changes reached it out of order."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.pool import NullPool

from entitlement_sync.models import DeliveryStatus, EffectiveAccess, WebhookDelivery
from entitlement_sync.testing import FakeStripe, StripeSimulatorServer, WebhookSender
from tests.conftest import TEST_DATABASE_URL
from tests.e2e.harness import API_KEY, WEBHOOK_SECRET, wait_until
from tests.e2e.invariants import Inspector, assert_invariants, delivered, record
from tests.e2e.workload import Workload
from tests.webhook_subscriber import Subscriber

pytestmark = pytest.mark.e2e

# Short pauses so that the subscriber's recovery shows within seconds; the sweep re-kicks every second.
QUICK_WEBHOOKS = {"ACCESS_WEBHOOK_MAX_PAUSE_SECONDS": "2", "SWEEP_INTERVAL_SECONDS": "1"}


class Table:
    """The service's `effective_access` and outbox, read directly."""

    def __init__(self, database_url: str) -> None:
        self._engine = create_engine(database_url, poolclass=NullPool)

    def granted(self) -> set[tuple[str, str]]:
        statement = select(EffectiveAccess.customer_id, EffectiveAccess.lookup_key).where(EffectiveAccess.granted)
        with self._engine.connect() as connection:
            return {(customer, key) for customer, key in connection.execute(statement)}

    def deliveries(self, status: str) -> int:
        statement = select(func.count()).where(WebhookDelivery.status == status)
        with self._engine.connect() as connection:
            return int(connection.scalar(statement) or 0)

    def close(self) -> None:
        self._engine.dispose()


def test_a_subscriber_down_for_part_of_the_run_ends_with_the_table(launch, inspector: Inspector, access_subscriber):
    assert TEST_DATABASE_URL
    subscriber: Subscriber = access_subscriber
    subscriber.down()
    stripe = FakeStripe(API_KEY, seed=11)
    table = Table(TEST_DATABASE_URL)
    with StripeSimulatorServer(stripe) as simulator:
        service = launch(simulator.url, ACCESS_WEBHOOK_URLS=subscriber.entry, **QUICK_WEBHOOKS)
        service.start_web(workers=2)
        service.start_worker(processes=2, threads=4)
        workload = Workload(stripe, 80, seed=11)
        knobs = {"threads": 4, "max_attempts": 60, "base_delay": 0.1, "max_delay": 2.0, "timeout": 15.0}
        knobs |= {"reorder_window": 20, "duplicate_share": 0.1, "seed": 11}
        with WebhookSender(stripe, f"{service.url}/webhooks/stripe", WEBHOOK_SECRET, **knobs) as sender:
            refused_while_down = 0
            for round_index in workload.rounds(changes=200, events_per_round=40):
                if round_index == 3:  # back up once it has refused retries and a backlog waits behind them
                    backlog = lambda: subscriber.requests >= 3 and table.deliveries(DeliveryStatus.PENDING) >= 20  # noqa: E731
                    wait_until(backlog, 60, "the down subscriber to be retried with a backlog behind")
                    refused_while_down = subscriber.requests
                    subscriber.up()
                assert sender.throttle(40, timeout=120)
            assert sender.drain(120)
        accepted, undelivered = delivered(sender)
        assert not undelivered
        _, snapshot = inspector.wait_for_convergence(stripe, workload.customers, accepted, 180)
        assert_invariants(snapshot)

        def subscriber_has_the_table() -> bool:
            return table.deliveries(DeliveryStatus.PENDING) == 0 and subscriber.granted() == table.granted()

        seconds = wait_until(subscriber_has_the_table, 120, "the subscriber's copy to equal the table")
    table_rows = table.granted()
    failed = table.deliveries(DeliveryStatus.FAILED)
    table.close()
    assert refused_while_down > 0  # it was down while changes were published, and they waited
    assert subscriber.out_of_order == []
    assert subscriber.rejected_signatures == 0 and failed == 0
    assert len(table_rows) > 50  # the workload granted plenty: the equality above is not of two empty sets
    record(
        "access webhooks: subscriber down for the first rounds",
        {
            "customers": len(workload.customers),
            "messages received": len(subscriber.messages),
            "requests (refused and redelivered included)": subscriber.requests,
            "refused while down": refused_while_down,
            "redeliveries dropped by webhook-id": subscriber.redeliveries,
            "granted rows in the table": len(table_rows),
            "seconds to catch up after the service converged": round(seconds, 1),
        },
    )
