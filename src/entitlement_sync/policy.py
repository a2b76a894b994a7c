"""The access policy: may this customer use this lookup key now, and why. A pure function of what we know.

Layers, in order: Stripe's active entitlements, then the subscription-state rules (which may withhold a
Stripe grant), then the catalog rule (opt-in: grant what the subscribed products carry now), then the
operator's grants and denials. A grant of the operator's beats every rule; only an explicit denial beats it.

No I/O here: the store loads `PolicyInputs`, `evaluate` answers; tests call it with plain values.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from .ports import ActiveEntitlement

# Stripe grants features while a subscription is in one of these; a terminal one never comes back.
STRIPE_GRANTING_STATUSES = frozenset({"active", "trialing", "past_due"})
TERMINAL_STATUSES = frozenset({"canceled", "incomplete_expired"})
SUBSCRIPTION_STATUSES = STRIPE_GRANTING_STATUSES | TERMINAL_STATUSES | {"incomplete", "unpaid", "paused"}

STRIPE_ENTITLEMENT = "stripe_entitlement"
MANUAL_GRANT = "manual_grant"
CATALOG = "catalog"
MANUAL_DENIAL = "manual_denial"
NO_ENTITLEMENT = "no_entitlement"
NEVER_SYNCED = "never_synced"
WITHHELD = "withheld:"  # + the subscription status that withholds


@dataclass(frozen=True)
class PolicyRules:
    withhold_statuses: frozenset[str] = frozenset()
    past_due_grace: timedelta | None = None  # None: past_due keeps access for ever
    catalog_grants: bool = False


@dataclass(frozen=True)
class SubscriptionState:
    id: str
    status: str
    product_ids: tuple[str, ...]
    past_due_since: datetime | None = None


@dataclass(frozen=True)
class Override:
    id: int
    lookup_key: str
    kind: str  # "grant" | "deny"
    expires_at: datetime | None
    created_by: str = ""
    reason: str = ""

    def active_at(self, now: datetime) -> bool:
        return self.expires_at is None or now < self.expires_at


@dataclass(frozen=True)
class CatalogLink:
    product_id: str
    feature_id: str
    lookup_key: str


@dataclass(frozen=True)
class PolicyInputs:
    entitlements: tuple[ActiveEntitlement, ...] = ()  # Stripe's list, as mirrored
    subscriptions: tuple[SubscriptionState, ...] = ()
    catalog: tuple[CatalogLink, ...] = ()  # links of the products the customer's subscriptions name
    overrides: tuple[Override, ...] = ()  # not revoked; expired ones too (they explain, they do not act)
    synced: bool = False


@dataclass(frozen=True)
class Source:
    kind: str  # entitlement | subscription | product | feature | grant | denial
    id: str
    detail: str = ""


@dataclass(frozen=True)
class Step:
    layer: str  # stripe | subscription | catalog | override
    outcome: str
    detail: str


@dataclass(frozen=True)
class Decision:
    granted: bool
    reason: str
    sources: tuple[Source, ...] = ()
    review_at: datetime | None = None  # the moment the clock alone may change this decision
    steps: tuple[Step, ...] = field(default=(), compare=False)


def evaluate(inputs: PolicyInputs, rules: PolicyRules, now: datetime) -> dict[str, Decision]:
    """A decision for every lookup key that some input names; a key absent here is simply not granted."""
    keys = {item.lookup_key for item in inputs.entitlements} | {item.lookup_key for item in inputs.overrides}
    if rules.catalog_grants:
        keys |= {link.lookup_key for link in _links_of_supporting(inputs, rules, now)}
    return {key: decide(key, inputs, rules, now) for key in sorted(keys)}


def decide(key: str, inputs: PolicyInputs, rules: PolicyRules, now: datetime) -> Decision:
    """The decision for one key, with the step each layer took (what `access explain` prints)."""
    granted, reason, sources, steps = _stripe_layer(key, inputs, rules, now)
    if not granted:
        granted, reason, sources, steps = _catalog_layer(key, inputs, rules, now, (reason, sources, steps))
    decision = _override_layer(key, inputs, now, Decision(granted, reason, sources, steps=steps))
    return Decision(
        decision.granted, decision.reason, decision.sources, _review_at(key, inputs, rules, now), decision.steps
    )


def reason_without_decision(synced: bool) -> str:
    return NO_ENTITLEMENT if synced else NEVER_SYNCED


# --- the layers ------------------------------------------------------------------------------------------

_Partial = tuple[bool, str, tuple[Source, ...], tuple[Step, ...]]


def _stripe_layer(key: str, inputs: PolicyInputs, rules: PolicyRules, now: datetime) -> _Partial:
    held = [item for item in inputs.entitlements if item.lookup_key == key]
    if not held:
        found = Step("stripe", "none", "Stripe's active entitlements hold no feature with this key")
        return False, reason_without_decision(inputs.synced), (), (found,)
    sources = tuple(Source("entitlement", item.id, item.feature_id) for item in held)
    listed = Step("stripe", "granted", ", ".join(f"{item.feature_id} ({item.id})" for item in held))
    withheld_by: list[SubscriptionState] = []
    for item in held:
        verdict, subscriptions = _subscription_verdict(item.feature_id, inputs, rules, now)
        if verdict is None:  # one feature under the key survives the rules: the key is granted
            supporting = _subscription_sources(item.feature_id, subscriptions, inputs.catalog)
            kept = Step("subscription", "kept", _describe(subscriptions) or "no subscription rule applies")
            return True, STRIPE_ENTITLEMENT, sources + supporting, (listed, kept)
        withheld_by.extend(subscriptions)
    status = _withholding_status(min(withheld_by, key=lambda s: (s.id, s.status)), rules, now)  # stable
    withheld = Step("subscription", WITHHELD + status, _describe(withheld_by) + ": every one withholds")
    withholding = tuple(Source("subscription", s.id, s.status) for s in withheld_by)
    return False, WITHHELD + status, sources + withholding, (listed, withheld)


def _subscription_verdict(
    feature_id: str, inputs: PolicyInputs, rules: PolicyRules, now: datetime
) -> tuple[str | None, list[SubscriptionState]]:
    """(None, supporting subscriptions) when the Stripe grant stands, ("withheld", withholding ones) when not.

    Stripe does not say which subscription an entitlement comes from: the catalog does (the products that
    carry the feature); when it knows none, every subscription of the customer may be the one.
    """
    carrying = {link.product_id for link in inputs.catalog if link.feature_id == feature_id}
    candidates = [s for s in inputs.subscriptions if carrying.intersection(s.product_ids)] or list(inputs.subscriptions)
    supporting = [s for s in candidates if s.status not in TERMINAL_STATUSES and not _withholds(s, rules, now)]
    withholding = [s for s in candidates if _withholds(s, rules, now)]
    if supporting or not withholding:
        return None, supporting
    return "withheld", withholding


def _catalog_layer(
    key: str,
    inputs: PolicyInputs,
    rules: PolicyRules,
    now: datetime,
    before: tuple[str, tuple[Source, ...], tuple[Step, ...]],
) -> _Partial:
    reason, sources, steps = before
    if not rules.catalog_grants:
        return False, reason, sources, (*steps, Step("catalog", "off", "ACCESS_CATALOG_GRANTS is off"))
    links = [link for link in _links_of_supporting(inputs, rules, now) if link.lookup_key == key]
    if not links:
        found = Step("catalog", "none", "no product of a subscription in good standing carries this key")
        return False, reason, sources, (*steps, found)
    subscriptions = [s for s in inputs.subscriptions if any(link.product_id in s.product_ids for link in links)]
    catalog_sources = tuple(Source("product", link.product_id, link.feature_id) for link in links)
    catalog_sources += tuple(Source("subscription", s.id, s.status) for s in subscriptions)
    detail = ", ".join(f"{link.product_id} carries {link.feature_id}" for link in links)
    return True, CATALOG, catalog_sources, (*steps, Step("catalog", "granted", detail))


def _override_layer(key: str, inputs: PolicyInputs, now: datetime, decision: Decision) -> Decision:
    active = [item for item in inputs.overrides if item.lookup_key == key and item.active_at(now)]
    denials = [item for item in active if item.kind == "deny"]
    grants = [item for item in active if item.kind == "grant"]
    if denials:
        step = Step("override", MANUAL_DENIAL, _describe_overrides(denials))
        sources = tuple(Source("denial", str(item.id), item.reason) for item in denials)
        return Decision(False, MANUAL_DENIAL, sources, steps=(*decision.steps, step))
    if grants:
        step = Step("override", MANUAL_GRANT, _describe_overrides(grants))
        grant_sources = tuple(Source("grant", str(item.id), item.reason) for item in grants)
        if decision.granted:  # the grant backs up a layer that grants already; it explains, it does not lead
            return Decision(True, decision.reason, decision.sources + grant_sources, steps=(*decision.steps, step))
        return Decision(True, MANUAL_GRANT, grant_sources, steps=(*decision.steps, step))
    return Decision(
        decision.granted, decision.reason, decision.sources, steps=(*decision.steps, Step("override", "none", ""))
    )


# --- helpers ---------------------------------------------------------------------------------------------


def _withholds(subscription: SubscriptionState, rules: PolicyRules, now: datetime) -> bool:
    return _withholding_status(subscription, rules, now) != ""


def _withholding_status(subscription: SubscriptionState, rules: PolicyRules, now: datetime) -> str:
    """The status that withholds access ("" when it does not): a listed status, or past_due past its grace."""
    if subscription.status == "past_due":
        ends = grace_end(subscription, rules)
        withheld = "past_due" in rules.withhold_statuses or (ends is not None and now >= ends)
        return "past_due" if withheld else ""
    return subscription.status if subscription.status in rules.withhold_statuses else ""


def grace_end(subscription: SubscriptionState, rules: PolicyRules) -> datetime | None:
    if subscription.status != "past_due" or rules.past_due_grace is None or subscription.past_due_since is None:
        return None
    return subscription.past_due_since + rules.past_due_grace


def _links_of_supporting(inputs: PolicyInputs, rules: PolicyRules, now: datetime) -> list[CatalogLink]:
    products = {
        product
        for s in inputs.subscriptions
        if s.status in STRIPE_GRANTING_STATUSES and not _withholds(s, rules, now)
        for product in s.product_ids
    }
    return [link for link in inputs.catalog if link.product_id in products]


def _review_at(key: str, inputs: PolicyInputs, rules: PolicyRules, now: datetime) -> datetime | None:
    """The next moment this key's decision may change with no new input: an expiry or a grace ending."""
    moments = [o.expires_at for o in inputs.overrides if o.lookup_key == key and o.expires_at and o.expires_at > now]
    graces = (grace_end(s, rules) for s in inputs.subscriptions)
    moments += [moment for moment in graces if moment is not None and moment > now]
    return min(moments, default=None)


def _subscription_sources(
    feature_id: str, subscriptions: Iterable[SubscriptionState], catalog: Iterable[CatalogLink]
) -> tuple[Source, ...]:
    """Each subscription in good standing, and those of its products that carry the feature (per the catalog)."""
    carrying = {link.product_id for link in catalog if link.feature_id == feature_id}
    sources: list[Source] = []
    for s in subscriptions:
        sources.append(Source("subscription", s.id, s.status))
        sources += [Source("product", product, feature_id) for product in s.product_ids if product in carrying]
    return tuple(sources)


def _describe(subscriptions: Iterable[SubscriptionState]) -> str:
    return ", ".join(f"{s.id} {s.status}" for s in subscriptions)


def _describe_overrides(overrides: Iterable[Override]) -> str:
    parts = []
    for item in overrides:
        until = f" until {item.expires_at.isoformat()}" if item.expires_at else ""
        parts.append(f"#{item.id} by {item.created_by}{until}: {item.reason}")
    return "; ".join(parts)


def sources_json(sources: Iterable[Source]) -> list[dict[str, str]]:
    return [{"kind": s.kind, "id": s.id, "detail": s.detail} for s in sources]


def features_of(sources: Iterable[dict[str, str]] | None) -> list[str]:
    """The Stripe feature ids behind a decision, sorted, from its sources (an entitlement's or a product's
    feature): several when an archived feature and its successor share a key; none for a grant made here or
    a revoke with nothing left behind it. The feed and the access webhooks both publish them."""
    ids = {s["detail"] for s in sources or () if s.get("kind") in ("entitlement", "product") and s.get("detail")}
    ids |= {s["id"] for s in sources or () if s.get("kind") == "feature" and s.get("id")}
    return sorted(ids)
