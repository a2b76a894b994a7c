"""Scenario 11 (issue 8): the service is redeployed with the key of another Stripe account. Stripe then answers
404 for every customer, exactly as it does for deleted ones. No row may be revoked; every event fails at once
with a reason that names STRIPE_API_KEY; `doctor` names the problem; once the key is fixed, replaying the
failed events converges to Stripe's truth. Real gunicorn and dramatiq processes, PostgreSQL, Redis.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.pool import NullPool

from entitlement_sync.events import complete_entitlements
from entitlement_sync.models import UNFINISHED, AccessChange, Entitlement, StripeEvent
from entitlement_sync.testing import FakeStripe, StripeSimulatorServer, WebhookSender
from tests.conftest import TEST_DATABASE_URL, TEST_REDIS_URL
from tests.e2e.harness import API_KEY, WEBHOOK_SECRET, Service, ServiceEnvironment, wait_until
from tests.e2e.invariants import Inspector, assert_invariants, delivered, delivery_figures, record
from tests.e2e.workload import Workload

pytestmark = pytest.mark.e2e

OTHER_KEY = "sk_test_e2e_key_of_another_account"


class Tables:
    """The scenario's evidence, read straight from SQL."""

    def __init__(self, database_url: str) -> None:
        self._engine = create_engine(database_url, poolclass=NullPool)

    def rows(self) -> set[tuple[str, str]]:
        with self._engine.connect() as connection:
            return set(connection.execute(select(Entitlement.customer_id, Entitlement.feature_id)).all())

    def revocations(self, not_caused_by: frozenset[str] | set[str] = frozenset()) -> int:
        query = select(func.count()).where(AccessChange.change == "revoked")
        if not_caused_by:
            query = query.where(AccessChange.event_id.is_(None) | AccessChange.event_id.not_in(not_caused_by))
        with self._engine.connect() as connection:
            return connection.scalar(query) or 0

    def written_from_payloads(self, ids: set[str]) -> set[str]:
        """The events among `ids` that were processed without a fetch: complete summary payloads (written, or
        found covered by a newer state)."""
        with self._engine.connect() as connection:
            query = select(StripeEvent.id, StripeEvent.type, StripeEvent.status, StripeEvent.payload)
            rows = connection.execute(query.where(StripeEvent.id.in_(ids))).all()
        return {
            event_id
            for event_id, event_type, status, payload in rows
            if status == "processed" and complete_entitlements(event_type, payload) is not None
        }

    def customers_of(self, ids: set[str]) -> set[str]:
        with self._engine.connect() as connection:
            query = select(StripeEvent.customer_id).where(StripeEvent.id.in_(ids))
            return {customer for customer in connection.scalars(query) if customer}

    def rows_of_customers_not_in(self, ids: set[str]) -> set[tuple[str, str]]:
        customers = self.customers_of(ids)
        return {row for row in self.rows() if row[0] not in customers}

    def events(self, ids: set[str]) -> list[tuple[str, str, int, str | None]]:
        with self._engine.connect() as connection:
            query = select(StripeEvent.id, StripeEvent.status, StripeEvent.attempts, StripeEvent.last_error)
            return [tuple(row) for row in connection.execute(query.where(StripeEvent.id.in_(ids)))]  # type: ignore[misc]

    def unfinished(self) -> int:
        with self._engine.connect() as connection:
            query = select(func.count()).select_from(StripeEvent).where(StripeEvent.status.in_(UNFINISHED))
            return connection.scalar(query) or 0

    def close(self) -> None:
        self._engine.dispose()


def entitlement_sync(environment: ServiceEnvironment, *arguments: str) -> subprocess.CompletedProcess[str]:
    """The ops command as an operator runs it, with the service's environment."""
    command = [sys.executable, "-m", "entitlement_sync.cli", *arguments]
    return subprocess.run(command, env=environment.variables(), capture_output=True, text=True, timeout=180)


def deliver(service: Service, workload: Workload, changes: int, seed: int) -> tuple[set[str], dict[str, object]]:
    """Change the account while Stripe's events reach `service`; (events with a 2xx, figures).

    The first call plays the workload's rounds (sign-ups first); later ones change random customers.
    """
    knobs = {"threads": 8, "max_attempts": 60, "base_delay": 0.1, "max_delay": 2.0, "timeout": 15.0}
    reordering = {"reorder_window": 50, "hold_back_share": 0.3, "duplicate_share": 0.10}
    url = f"{service.url}/webhooks/stripe"
    with WebhookSender(workload.stripe, url, WEBHOOK_SECRET, seed=seed, **knobs, **reordering) as sender:
        if not workload.changes:
            for _ in workload.rounds(changes=changes, events_per_round=50):
                assert sender.throttle(50, timeout=120)
        else:
            chosen = random.Random(seed)
            for index in range(changes):
                workload.change(chosen.choice(workload.customers))
                if index % 25 == 24:
                    assert sender.throttle(50, timeout=120)
        assert sender.drain(120)
        accepted, undelivered = delivered(sender)
        assert not undelivered
        return accepted, delivery_figures(sender)


@pytest.fixture
def services(tmp_path: Path) -> Iterator[list[Service]]:
    started: list[Service] = []
    yield started
    for service in started:
        service.stop()


def start(services: list[Service], environment: ServiceEnvironment, log_dir: Path) -> Service:
    service = Service(environment, log_dir)
    services.append(service)
    service.start_web(workers=2)
    service.start_worker(processes=1, threads=4)
    return service


def test_a_key_of_another_account_revokes_nobody_and_says_why(launch, services, tmp_path):
    assert TEST_DATABASE_URL and TEST_REDIS_URL
    stripe = FakeStripe(API_KEY, seed=8)
    other_account = stripe.add_key_of_another_account(OTHER_KEY)
    inspector, tables = Inspector(TEST_DATABASE_URL), Tables(TEST_DATABASE_URL)
    figures: dict[str, object] = {}
    try:
        with StripeSimulatorServer(stripe) as simulator:
            workload = Workload(stripe, 100, seed=8)
            # 1. The right key: 100 customers, their rows synced from Stripe.
            right = launch(simulator.url)  # migrates and empties the tables
            services.append(right)
            right.start_web(workers=2)
            right.start_worker(processes=1, threads=4)
            first, _ = deliver(right, workload, changes=150, seed=8)
            _, converged = inspector.wait_for_convergence(stripe, workload.customers, first, 120)
            assert_invariants(converged)
            right.stop()
            rows_before, revoked_before, calls_before = tables.rows(), tables.revocations(), len(stripe.calls)

            # 2. Redeployed with the key of another account; Stripe keeps sending the platform's events.
            wrong_environment = ServiceEnvironment(
                TEST_DATABASE_URL, TEST_REDIS_URL, simulator.url, extra={"STRIPE_API_KEY": OTHER_KEY}
            )
            wrong = start(services, wrong_environment, tmp_path)
            second, sent = deliver(wrong, workload, changes=100, seed=9)
            wait_until(lambda: tables.unfinished() == 0, 120, "every event to finish")
            events = tables.events(second)
            handled = [event for event in events if event[1] != "ignored"]
            # Processed events made no call that answered: a complete summary payload provably newer than the
            # rows is written from Stripe's own signed word, and an event whose change a newer state already
            # covers needs no call. Every event that needed a fetch failed at once, naming the key.
            from_payload = tables.written_from_payloads(second)
            fetched = [event for event in handled if event[1] != "processed"]
            assert fetched and all(status == "failed" for _, status, _, _ in fetched), Counter(e[1] for e in events)
            assert all(attempts == 1 for _, _, attempts, _ in fetched)  # failed at once: no retry fixes a key
            for _, _, _, error in fetched:
                assert error and "STRIPE_API_KEY" in error and "another account or mode" in error
            # Nothing the wrong key's 404s said revoked a row: every revocation since came from a signed payload.
            assert tables.revocations(not_caused_by=from_payload) == revoked_before
            assert tables.rows_of_customers_not_in(from_payload) == {
                row for row in rows_before if row[0] not in tables.customers_of(from_payload)
            }
            rows_after_events = tables.rows()
            wrong_calls = Counter(call.status for call in stripe.calls[calls_before:])
            assert wrong_calls and set(wrong_calls) == {404}  # the wrong key read nothing: no processed event fetched

            doctor = entitlement_sync(wrong_environment, "doctor", "--json")
            assert doctor.returncode == 1, doctor.stderr
            found = {item["check"]: item for item in json.loads(doctor.stdout)["findings"]}
            assert found["stripe customer"]["level"] == "problem"
            assert "STRIPE_API_KEY belongs to another account or mode" in found["stripe customer"]["detail"]
            assert other_account in found["stripe account"]["detail"]

            sync_all = entitlement_sync(wrong_environment, "sync", "all", "--rate", "1000", "--json")
            report = json.loads(sync_all.stdout)
            assert sync_all.returncode == 1 and report["revoked"] == 0 and report["errors"] == report["checked"]
            assert tables.rows() == rows_after_events
            assert tables.revocations(not_caused_by=from_payload) == revoked_before
            revoked_with_wrong_key = tables.revocations(not_caused_by=from_payload) - revoked_before
            wrong.stop()

            # 3. The key fixed: doctor is content, the failed events are replayed and converge.
            fixed_environment = ServiceEnvironment(TEST_DATABASE_URL, TEST_REDIS_URL, simulator.url)
            start(services, fixed_environment, tmp_path)
            healthy = entitlement_sync(fixed_environment, "doctor", "--json")
            assert healthy.returncode == 0, healthy.stdout
            replay_started = time.monotonic()
            replay = entitlement_sync(fixed_environment, "events", "replay", "--failed")
            assert replay.returncode == 0, replay.stderr
            seconds, final = inspector.wait_for_convergence(stripe, workload.customers, first | second, 120)
            assert_invariants(final)
            figures = {
                "customers": len(workload.customers),
                "rows before the key changed": len(rows_before),
                **{f"wrong key: {name}": value for name, value in sent.items()},
                "failed (each after 1 attempt)": len(fetched),
                "written from complete payloads (no call)": len(from_payload),
                "ignored (customer.updated)": len(events) - len(handled),
                "Stripe answers to the wrong key": dict(sorted(wrong_calls.items())),
                "rows revoked with the wrong key (events and sync all)": revoked_with_wrong_key,
                "doctor exit (wrong key / fixed key)": f"{doctor.returncode} / {healthy.returncode}",
                "sync all with the wrong key": f"exit {sync_all.returncode}, {report['errors']} errors, 0 revoked",
                "seconds to converge after replay --failed": round(time.monotonic() - replay_started, 1),
                "final statuses": dict(final.statuses),
                "seconds waited for convergence": round(seconds, 1),
            }
    finally:
        inspector.close()
        tables.close()
    record("11. STRIPE_API_KEY of another account, then fixed and replayed", figures)
