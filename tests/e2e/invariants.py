"""What every scenario ends with: the access table equals what the simulator's billing model derives (each
customer's active entitlements, ids included), and the inbox holds every delivered event as processed,
superseded (a later fetch applied its effect) or deliberately ignored, none failed, waiting or unfinished.
Read straight from SQL.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import create_engine, func, select
from sqlalchemy.pool import NullPool

from entitlement_sync.models import UNFINISHED, EffectiveAccess, Entitlement, EventAttempt, EventStatus, StripeEvent
from entitlement_sync.testing import BillingModel, WebhookSender

FINISHED = {EventStatus.PROCESSED, EventStatus.SUPERSEDED, EventStatus.IGNORED}
NOT_DONE = (*UNFINISHED, EventStatus.WAITING)  # waiting for Stripe: the sweep will try it again
Rows = set[tuple[str, str, str]]  # (feature id, lookup key, entitlement id)


def derived(stripe: BillingModel, customer: str) -> Rows:
    """What Stripe says the customer holds: the model's active entitlements, as its API lists them."""
    return {(item["feature"], item["lookup_key"], item["id"]) for item in stripe.active_entitlements(customer)}


@dataclass
class Snapshot:
    statuses: Counter[str]
    failed: list[tuple[str, str]]  # (event id, first line of last_error)
    missing: set[str]  # delivered (2xx) but not stored
    mismatched: dict[str, tuple[Rows, Rows]]  # customer: (rows, what the model derives)
    attempts: int = 0
    open_attempts: int = 0  # attempts never finished: their worker died mid-job
    most_attempts: int = 0  # the most processing attempts any one event took
    extra: dict[str, Any] = field(default_factory=dict)
    # Under the default policy effective access is the mirror's lookup keys: customer -> (effective, mirror)
    effective_mismatched: dict[str, tuple[set[str], set[str]]] = field(default_factory=dict)

    @property
    def unfinished(self) -> int:
        return sum(self.statuses[status] for status in NOT_DONE)

    @property
    def converged(self) -> bool:
        return not (self.unfinished or self.failed or self.missing or self.mismatched or self.effective_mismatched)

    def describe(self) -> str:
        wrong = list(self.mismatched.items())[:5]
        return (
            f"statuses={dict(self.statuses)} failed={self.failed[:5]} missing={sorted(self.missing)[:5]} "
            f"mismatched={len(self.mismatched)} e.g. {wrong} "
            f"effective_mismatched={list(self.effective_mismatched.items())[:5]}"
        )


class Inspector:
    """Reads the scenario's database directly, without the service's code paths."""

    def __init__(self, database_url: str) -> None:
        self._engine = create_engine(database_url, poolclass=NullPool)

    def snapshot(self, stripe: BillingModel, customers: Iterable[str], delivered: set[str]) -> Snapshot:
        with self._engine.connect() as connection:
            statuses = Counter(
                dict(connection.execute(select(StripeEvent.status, func.count()).group_by(StripeEvent.status)).all())
            )
            failed = connection.execute(
                select(StripeEvent.id, StripeEvent.last_error).where(StripeEvent.status == EventStatus.FAILED)
            ).all()
            stored = set(connection.scalars(select(StripeEvent.id)))
            rows: dict[str, Rows] = defaultdict(set)
            for customer, feature, key, entitlement in connection.execute(
                select(
                    Entitlement.customer_id, Entitlement.feature_id, Entitlement.lookup_key, Entitlement.entitlement_id
                )
            ):
                rows[customer].add((feature, key, entitlement))
            effective: dict[str, set[str]] = defaultdict(set)
            granted = select(EffectiveAccess.customer_id, EffectiveAccess.lookup_key).where(EffectiveAccess.granted)
            for customer, key in connection.execute(granted):
                effective[customer].add(key)
            attempts = connection.scalar(select(func.count()).select_from(EventAttempt)) or 0
            most_attempts = connection.scalar(select(func.max(StripeEvent.attempts))) or 0
            open_attempts = connection.scalar(
                select(func.count()).select_from(EventAttempt).where(EventAttempt.finished_at.is_(None))
            )
        expected = {customer: derived(stripe, customer) for customer in set(customers) | set(rows)}
        mismatched = {
            customer: (rows.get(customer, set()), held)
            for customer, held in expected.items()
            if rows.get(customer, set()) != held
        }
        keys = {customer: {key for _, key, _ in held} for customer, held in rows.items()}
        effective_mismatched = {
            customer: (effective.get(customer, set()), keys.get(customer, set()))
            for customer in set(keys) | set(effective)
            if effective.get(customer, set()) != keys.get(customer, set())
        }
        return Snapshot(
            statuses=statuses,
            effective_mismatched=effective_mismatched,
            failed=[(event_id, (error or "").split("\n")[0]) for event_id, error in failed],
            missing=delivered - stored,
            mismatched=mismatched,
            attempts=attempts,
            open_attempts=open_attempts or 0,
            most_attempts=most_attempts,
        )

    def count(self, *statuses: str) -> int:
        with self._engine.connect() as connection:
            return (
                connection.scalar(select(func.count()).select_from(StripeEvent).where(StripeEvent.status.in_(statuses)))
                or 0
            )

    def wait_for_convergence(
        self, stripe: BillingModel, customers: Iterable[str], delivered: set[str], timeout: float
    ) -> tuple[float, Snapshot]:
        """Poll until converged; returns (seconds it took, last snapshot). Fails with the evidence."""
        customers = list(customers)
        started = time.monotonic()
        while True:
            snapshot = self.snapshot(stripe, customers, delivered)
            if snapshot.converged:
                return time.monotonic() - started, snapshot
            # Nothing left to process yet still wrong: waiting longer cannot help.
            settled = not snapshot.unfinished and (snapshot.failed or snapshot.missing)
            if settled or time.monotonic() - started > timeout:
                raise AssertionError(f"no convergence after {time.monotonic() - started:.1f} s: {snapshot.describe()}")
            time.sleep(0.5)

    def close(self) -> None:
        self._engine.dispose()


def assert_invariants(snapshot: Snapshot) -> None:
    assert not snapshot.failed, f"failed events: {snapshot.failed[:5]}"
    assert set(snapshot.statuses) <= FINISHED, f"unfinished events: {dict(snapshot.statuses)}"
    assert not snapshot.missing, f"delivered but not stored: {sorted(snapshot.missing)[:5]}"
    assert not snapshot.mismatched, f"rows differ from Stripe for {len(snapshot.mismatched)} customers"
    assert not snapshot.effective_mismatched, f"effective access differs: {snapshot.describe()}"


# --- figures ---------------------------------------------------------------------------------------------


def delivered(sender: WebhookSender) -> tuple[set[str], set[str]]:
    """(events that got a 2xx, events that never did)."""
    attempts = list(sender.deliveries)
    accepted = {record.event_id for record in attempts if 200 <= record.status < 300}
    return accepted, {record.event_id for record in attempts} - accepted


def delivery_figures(sender: WebhookSender) -> dict[str, Any]:
    attempts, stats = list(sender.deliveries), sender.stats
    answers = Counter(_service_status(record.answer) for record in attempts if 200 <= record.status < 300)
    return {
        "events sent": len({record.event_id for record in attempts}),
        "deliveries": len(attempts),
        "accepted": answers["accepted"],
        "duplicates sent": stats.duplicates_sent,
        "answered duplicate": answers["duplicate"],
        "answered ignored": answers["ignored"],
        "redeliveries": stats.retries,
        "http": dict(sorted(Counter(record.status for record in attempts).items())),
        "slowest answer s": round(max((record.seconds for record in attempts), default=0.0), 2),
    }


def _service_status(answer: bytes) -> str:
    """The `status` entitlement-sync answers a delivery with: accepted, duplicate or ignored."""
    try:
        return str(json.loads(answer).get("status", "?"))
    except (ValueError, AttributeError):
        return "not json"


RESULTS: list[tuple[str, dict[str, Any]]] = []


def record(scenario: str, figures: dict[str, Any]) -> None:
    """Keep a scenario's figures for the session summary, and append them to $E2E_FIGURES when set."""
    RESULTS.append((scenario, figures))
    print(f"\n[{scenario}] {json.dumps(figures)}")
    path = os.environ.get("E2E_FIGURES")
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps({"scenario": scenario, **figures}) + "\n")
