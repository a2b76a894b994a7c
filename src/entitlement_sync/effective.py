"""Use cases: keep each customer's effective access (the policy's answers) in step with its inputs, and
explain one answer.

`recompute` runs inside the transaction that changed an input (a sync, a subscription event, a catalog sync,
an override), so effective access never lags its inputs; the clock's own changes (an override expiring, a
past_due grace ending) are picked up by `review_due`, which the workers' sweep thread runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from . import policy, store
from .db import SessionFactory, transaction
from .logs import get_logger
from .models import EffectiveAccessChange
from .policy import Decision, PolicyInputs, PolicyRules
from .ports import Clock
from .store.effective import EffectiveRow

log = get_logger(__name__)

# Hears each recorded change inside its transaction: the outbox of access webhooks (outbox.Outbox.publish).
ChangePublisher = Callable[[Session, EffectiveAccessChange], None]


def _publish_nothing(session: Session, change: EffectiveAccessChange) -> None:
    pass


@dataclass(frozen=True)
class EffectiveChange:
    customer_id: str
    lookup_key: str
    change: str  # granted | revoked | updated
    reason: str
    previous_reason: str | None
    cause: str
    decision: Decision = field(repr=False, compare=False)


@dataclass
class EffectivePlan:
    """A recompute's writes: the rows to upsert, the keys to delete, and the changes for the history."""

    customer_id: str
    now: datetime
    written: list[dict[str, Any]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    changes: list[EffectiveChange] = field(default_factory=list)

    @property
    def saved(self) -> store.writes.EffectiveSaved:
        """The arguments of `store.effective.save` after the customer's id."""
        return self.written, self.deleted, _history_rows(self.changes, self.now)


class AccessPolicy:
    def __init__(
        self, new_session: SessionFactory, rules: PolicyRules, clock: Clock, publish: ChangePublisher | None = None
    ) -> None:
        self._new_session = new_session
        self.rules = rules
        self._clock = clock
        self._publish = publish or _publish_nothing

    def recompute(
        self,
        session: Session,
        customer_id: str,
        cause: str | None,
        now: datetime | None = None,
        read: tuple[PolicyInputs, dict[str, EffectiveRow]] | None = None,
    ) -> list[EffectiveChange]:
        """Make the customer's effective rows what the policy says now; write each change with its cause.

        `cause` None means the clock moved (the sweep): each change then names what expired or ended. `read`:
        the policy's inputs and the effective rows (`inputs_and_rows`), when the caller read them already in
        this transaction, under the customer's lock and after its own writes.
        """
        now = now or self._clock()
        store.locks.lock_customer(session, customer_id)
        inputs, current = read or store.policy_inputs.inputs_and_rows(session, customer_id)
        plan = self.plan(customer_id, inputs, current, cause, now)
        return self.recorded(session, plan, store.effective.save(session, customer_id, *plan.saved))

    def plan(
        self,
        customer_id: str,
        inputs: PolicyInputs,
        current: dict[str, EffectiveRow],
        cause: str | None,
        now: datetime,
    ) -> EffectivePlan:
        """What `recompute` writes, from its inputs and the rows as they stand (writes nothing)."""
        decisions = policy.evaluate(inputs, self.rules, now)
        nothing = Decision(False, policy.reason_without_decision(inputs.synced))
        plan = EffectivePlan(customer_id, now)
        for key in sorted(decisions.keys() | current.keys()):
            row, decision = current.get(key), decisions.get(key, nothing)
            before = (row.granted, row.reason) if row is not None else (False, nothing.reason)
            why = cause or _clock_cause(key, inputs, self.rules, row, now)  # before the row moves on
            if key not in decisions:
                plan.deleted.append(key)  # no decision, no row
            elif (values := _row_values(customer_id, key, decision, row, now)) is not None:
                plan.written.append(values)
            if before != (decision.granted, decision.reason):
                plan.changes.append(_change(customer_id, key, before, decision, why))
        return plan

    def recorded(
        self, session: Session, plan: EffectivePlan, recorded: list[EffectiveAccessChange]
    ) -> list[EffectiveChange]:
        """Publish the changes a plan's write recorded, in its transaction: the change and its webhook
        deliveries commit together."""
        for change in recorded:
            self._publish(session, change)
        if plan.changes:
            changes = [(c.lookup_key, c.change) for c in plan.changes]
            log.info("access.effective_changed", customer=plan.customer_id, changes=changes)
        return plan.changes

    def writes_when_recorded(self, plan: EffectivePlan) -> bool:
        """Whether `recorded` writes anything for this plan (its flips' webhook deliveries, when someone
        subscribes): a writer whose statement is otherwise the transaction's last leaves the COMMIT to it then."""
        return self._publish is not _publish_nothing and any(c.change in store.feed.PUBLISHED for c in plan.changes)

    def recompute_many(self, session: Session, customer_ids: Iterable[str], cause: str) -> list[EffectiveChange]:
        now = self._clock()
        return [
            change for customer in sorted(set(customer_ids)) for change in self.recompute(session, customer, cause, now)
        ]

    def recompute_customers(self, customer_ids: Iterable[str], cause: str) -> list[EffectiveChange]:
        """One transaction per customer: for `access recompute` after the rules changed."""
        changes: list[EffectiveChange] = []
        for customer_id in sorted(set(customer_ids)):
            with transaction(self._new_session) as session:
                changes += self.recompute(session, customer_id, cause)
        return changes

    def review_due(self, batch: int = 500) -> int:
        """Recompute every customer whose decision the clock may have changed; returns how many changed.

        One process at a time (like the sweep): the lock's transaction stays open, idle, until this is done.
        """
        with transaction(self._new_session) as locked:
            if not store.locks.try_transaction_lock(locked, store.locks.ACCESS_REVIEW):
                return 0
            return self._review(batch)

    def _review(self, batch: int) -> int:
        changed = 0
        with self._new_session() as session:
            due = store.effective.customers_due_for_review(session, self._clock(), batch)
        for customer_id in due:
            with transaction(self._new_session) as session:
                changed += bool(self.recompute(session, customer_id, None))
        if due:
            log.info("access.reviewed", customers=len(due), changed=changed)
        return changed

    def all_customers(self) -> set[str]:
        with self._new_session() as session:
            return store.subscriptions.local_customer_ids(session) | store.effective.customers_with_rows(session)


def _row_values(
    customer_id: str, key: str, decision: Decision, row: EffectiveRow | None, now: datetime
) -> dict[str, Any] | None:
    """The key's whole row as the decision says it; None when the row already says exactly that."""
    sources = policy.sources_json(decision.sources)
    if row is not None and (row.granted, row.reason, row.sources, row.review_at) == (
        decision.granted,
        decision.reason,
        sources,
        decision.review_at,
    ):
        return None
    moved = row is None or (row.granted, row.reason) != (decision.granted, decision.reason)
    return {
        "customer_id": customer_id,
        "lookup_key": key,
        "granted": decision.granted,
        "reason": decision.reason,
        "sources": sources,
        "since": now if moved or row is None else row.since,
        "computed_at": now,
        "review_at": decision.review_at,
    }


def _history_rows(changes: list[EffectiveChange], now: datetime) -> list[dict[str, Any]]:
    return [
        {
            "customer_id": change.customer_id,
            "lookup_key": change.lookup_key,
            "change": change.change,
            "granted": change.decision.granted,
            "reason": change.reason,
            "previous_reason": change.previous_reason,
            "sources": policy.sources_json(change.decision.sources),
            "cause": change.cause[:255],
            "changed_at": now,
        }
        for change in changes
    ]


def _change(customer_id: str, key: str, before: tuple[bool, str], decision: Decision, cause: str) -> EffectiveChange:
    was_granted, previous_reason = before
    flipped = "granted" if decision.granted else "revoked"
    change = flipped if was_granted != decision.granted else "updated"
    return EffectiveChange(customer_id, key, change, decision.reason, previous_reason, cause, decision)


def _clock_cause(key: str, inputs: PolicyInputs, rules: PolicyRules, row: EffectiveRow | None, now: datetime) -> str:
    """What the clock did to this key since the row was written: an override expired, a grace ended."""
    after = row.computed_at if row is not None else None
    for override in inputs.overrides:
        expiry = override.expires_at
        if override.lookup_key == key and expiry is not None and expiry <= now and (after is None or expiry > after):
            return f"override:{override.id}:expired"
    for subscription in inputs.subscriptions:
        grace_end = policy.grace_end(subscription, rules)
        if grace_end is not None and grace_end <= now and (after is None or grace_end > after):
            return f"grace:{subscription.id}"
    return "clock"
