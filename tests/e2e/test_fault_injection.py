"""Scenarios 1–5 of issue 4: whatever Stripe, the network, Redis, PostgreSQL or a worker does, the access
table converges to Stripe's truth and every delivered event ends processed or deliberately ignored.

Each scenario changes plans in the simulated Stripe batch by batch while a sender delivers Stripe's events
(duplicated, reordered, redelivered on non-2xx) to the real processes, injects its fault mid-run, then waits
for convergence and checks the invariants. Figures go to the session summary (see docs/reliability.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from entitlement_sync.testing import StripeSimulatorServer
from tests.conftest import TEST_DATABASE_URL
from tests.e2e.chaos import ChaosStripe, SendStats, WebhookSender
from tests.e2e.harness import API_KEY, Service
from tests.e2e.invariants import Inspector, Snapshot, assert_invariants, record
from tests.e2e.workload import Workload

pytestmark = pytest.mark.e2e

# Lost Redis jobs and jobs of a killed worker stay queued/processing in SQL: the sweep re-enqueues them.
QUICK_RECOVERY = {"STUCK_AFTER_SECONDS": "5", "SWEEP_INTERVAL_SECONDS": "1"}


@dataclass
class Run:
    stripe: ChaosStripe
    simulator: StripeSimulatorServer
    workload: Workload
    sender: WebhookSender
    started: float

    def finish(self, inspector: Inspector, timeout: float = 180) -> tuple[SendStats, float, Snapshot]:
        stats = self.sender.drain(timeout)
        assert not stats.undelivered, f"{len(stats.undelivered)} events never got a 2xx"
        seconds, snapshot = inspector.wait_for_convergence(
            self.stripe, self.workload.customers, stats.delivered, timeout
        )
        assert_invariants(snapshot)
        return stats, seconds, snapshot

    def figures(self, stats: SendStats, converge_seconds: float, snapshot: Snapshot) -> dict[str, object]:
        return {
            "customers": len(self.workload.customers),
            **stats.figures(),
            "stripe calls": len(self.stripe.calls),
            "stripe answers": dict(sorted(self.stripe.call_statuses().items())),
            "event statuses": dict(snapshot.statuses),
            "processing attempts": snapshot.attempts,
            "seconds to converge after last delivery": round(converge_seconds, 1),
            "seconds in all": round(time.monotonic() - self.started, 1),
        }


@contextmanager
def scenario(customers: int, seed: int, sender_url: Callable[[str], str], **chaos: object) -> Iterator[Run]:
    stripe = ChaosStripe(API_KEY, seed=seed, **chaos)  # type: ignore[arg-type]
    with StripeSimulatorServer(stripe) as simulator:
        workload = Workload(stripe, customers, seed=seed)
        sender = WebhookSender(
            sender_url(simulator.url), seed=seed, duplicate_share=0.10, hold_back_share=0.3
        )
        try:
            yield Run(stripe, simulator, workload, sender, time.monotonic())
        finally:
            sender.close()


@pytest.fixture
def inspector() -> Iterator[Inspector]:
    assert TEST_DATABASE_URL
    inspector = Inspector(TEST_DATABASE_URL)
    yield inspector
    inspector.close()


def start(launch: Callable[..., Service], **extra: str) -> Callable[[str], str]:
    """The sender's target: a service started on the simulator's URL, with 4 web and 2x4 worker threads."""

    def start_on(stripe_url: str) -> str:
        service = launch(stripe_url, **extra)
        service.start_web(workers=4)
        service.start_worker(processes=2, threads=4)
        return service.url

    return start_on


def test_500_customers_with_duplicates_and_heavy_reordering_converge(launch, inspector):
    with scenario(500, seed=1, sender_url=start(launch)) as run:
        for batch in run.workload.batches(changes=800, batch_size=100):
            run.sender.send(batch)
            run.sender.throttle(max_pending=100)
        stats, seconds, snapshot = run.finish(inspector)
    assert stats.answers["duplicate"] >= stats.duplicates_sent
    record("1. 500 customers, 10% duplicates, heavy reordering", run.figures(stats, seconds, snapshot))
