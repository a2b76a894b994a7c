"""Use case for people: why may (or may not) this customer use this lookup key? The whole chain, from the
policy's inputs to the stored answer and the history of the key."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from . import policy, store
from .access import AccessReader
from .db import SessionFactory
from .models import EffectiveAccessChange
from .policy import CatalogLink, Override, PolicyRules, Step, SubscriptionState
from .ports import AccessLine, ActiveEntitlement, Clock


@dataclass(frozen=True)
class KeyChange:
    id: int
    changed_at: datetime
    change: str
    reason: str
    previous_reason: str | None
    cause: str


@dataclass(frozen=True)
class Explanation:
    customer: str
    lookup_key: str
    granted: bool  # what readers get now (the stored row)
    reason: str
    sources: list[dict[str, str]]
    since: datetime | None
    synced_at: datetime | None
    stale: bool
    steps: list[Step]  # the policy evaluated now, layer by layer
    # The policy's answer this instant: differs from the stored one only while a recompute is pending (an
    # override expired a moment ago and the sweep has not come round yet), or after the rules were changed.
    fresh_granted: bool
    fresh_reason: str
    rules: dict[str, object]
    entitlements: list[ActiveEntitlement]
    subscriptions: list[SubscriptionState]
    catalog: list[CatalogLink]
    overrides: list[Override]
    history: list[KeyChange]


class Explainer:
    def __init__(self, new_session: SessionFactory, reader: AccessReader, rules: PolicyRules, clock: Clock) -> None:
        self._new_session = new_session
        self._reader = reader
        self._rules = rules
        self._clock = clock

    def explain_customer(self, customer_id: str) -> list[AccessLine]:
        """The console's customer page (the AccessExplainer port): each effective decision with its reason."""
        return [
            AccessLine(
                decision.lookup_key,
                _feature_of(decision.sources),
                decision.granted,
                decision.reason,
                tuple(source["id"] for source in decision.sources),
                decision.since,
            )
            for decision in self._reader.effective_for(customer_id).decisions
        ]

    def explain(self, customer_id: str, lookup_key: str, history: int = 20) -> Explanation:
        stored = self._reader.check(customer_id, lookup_key)
        with self._new_session() as session:
            inputs = store.policy_inputs.policy_inputs(session, customer_id)
            changes = store.effective.changes_of(session, customer_id, lookup_key, history)
        fresh = policy.decide(lookup_key, inputs, self._rules, self._clock())
        keyed = {link.feature_id for link in inputs.catalog if link.lookup_key == lookup_key}
        keyed |= {item.feature_id for item in inputs.entitlements if item.lookup_key == lookup_key}
        return Explanation(
            customer=customer_id,
            lookup_key=lookup_key,
            granted=stored.granted,
            reason=stored.reason,
            sources=stored.sources,
            since=stored.since,
            synced_at=stored.synced_at,
            stale=stored.stale,
            steps=list(fresh.steps),
            fresh_granted=fresh.granted,
            fresh_reason=fresh.reason,
            rules={
                "withhold_statuses": sorted(self._rules.withhold_statuses),
                "past_due_grace_days": _days(self._rules),
                "catalog_grants": self._rules.catalog_grants,
            },
            entitlements=[item for item in inputs.entitlements if item.lookup_key == lookup_key],
            subscriptions=list(inputs.subscriptions),
            catalog=[link for link in inputs.catalog if link.feature_id in keyed],
            overrides=[item for item in inputs.overrides if item.lookup_key == lookup_key],
            history=[_change(row) for row in changes],
        )


def _days(rules: PolicyRules) -> float | None:
    return None if rules.past_due_grace is None else rules.past_due_grace.total_seconds() / 86400


def _change(row: EffectiveAccessChange) -> KeyChange:
    return KeyChange(row.id, row.changed_at, row.change, row.reason, row.previous_reason, row.cause)


def _feature_of(sources: list[dict[str, str]]) -> str:
    """The feature behind a decision: the entitlement's or the catalog's; "" for a grant made here."""
    return next((s["detail"] for s in sources if s["kind"] in ("entitlement", "product")), "")
