"""The access policy, as a pure function: each layer, each reason, and properties that hold for any input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from entitlement_sync.policy import (
    CatalogLink,
    Override,
    PolicyInputs,
    PolicyRules,
    SubscriptionState,
    decide,
    evaluate,
)
from entitlement_sync.ports import ActiveEntitlement

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
API = ActiveEntitlement("ent_api", "feat_api", "api_access")
PAUSED = SubscriptionState("sub_1", "paused", ("prod_pro",))
ACTIVE = SubscriptionState("sub_2", "active", ("prod_pro",))
PRO_API = CatalogLink("prod_pro", "feat_api", "api_access")
WITHHOLD_PAUSED = PolicyRules(withhold_statuses=frozenset({"paused", "unpaid"}))


def inputs(**fields: object) -> PolicyInputs:
    return PolicyInputs(synced=True, **fields)  # type: ignore[arg-type]


def grant(override_id: int = 1, key: str = "api_access", expires: datetime | None = None) -> Override:
    return Override(override_id, key, "grant", expires or NOW + timedelta(days=1), "ana", "pilot")


def deny(override_id: int = 2, key: str = "api_access", expires: datetime | None = None) -> Override:
    return Override(override_id, key, "deny", expires, "bo", "abuse")


def test_a_stripe_entitlement_grants_with_its_entitlement_as_the_source():
    decision = decide("api_access", inputs(entitlements=(API,)), PolicyRules(), NOW)
    assert (decision.granted, decision.reason) == (True, "stripe_entitlement")
    assert [(s.kind, s.id, s.detail) for s in decision.sources] == [("entitlement", "ent_api", "feat_api")]


def test_nothing_known_is_no_entitlement_or_never_synced():
    assert decide("api_access", inputs(), PolicyRules(), NOW).reason == "no_entitlement"
    assert decide("api_access", PolicyInputs(), PolicyRules(), NOW).reason == "never_synced"
    assert evaluate(inputs(), PolicyRules(), NOW) == {}


def test_by_default_no_subscription_status_withholds():
    everything = SubscriptionState("sub_1", "unpaid", ("prod_pro",))
    decision = decide("api_access", inputs(entitlements=(API,), subscriptions=(everything,)), PolicyRules(), NOW)
    assert decision.granted


def test_a_paused_subscription_withholds_what_stripe_still_lists():
    decision = decide("api_access", inputs(entitlements=(API,), subscriptions=(PAUSED,)), WITHHOLD_PAUSED, NOW)
    assert (decision.granted, decision.reason) == (False, "withheld:paused")
    assert ("subscription", "sub_1", "paused") in [(s.kind, s.id, s.detail) for s in decision.sources]


def test_one_subscription_in_good_standing_that_carries_the_feature_keeps_it():
    both = inputs(entitlements=(API,), subscriptions=(PAUSED, ACTIVE), catalog=(PRO_API,))
    assert decide("api_access", both, WITHHOLD_PAUSED, NOW).reason == "stripe_entitlement"


def test_a_subscription_that_does_not_carry_the_feature_does_not_keep_it():
    other = SubscriptionState("sub_3", "active", ("prod_other",))
    paused_pro = inputs(entitlements=(API,), subscriptions=(PAUSED, other), catalog=(PRO_API,))
    assert decide("api_access", paused_pro, WITHHOLD_PAUSED, NOW).reason == "withheld:paused"


def test_a_canceled_subscription_neither_keeps_nor_withholds():
    canceled = SubscriptionState("sub_3", "canceled", ("prod_pro",))
    only_canceled = inputs(entitlements=(API,), subscriptions=(canceled,))
    assert decide("api_access", only_canceled, WITHHOLD_PAUSED, NOW).granted
    with_paused = inputs(entitlements=(API,), subscriptions=(canceled, PAUSED))
    assert decide("api_access", with_paused, WITHHOLD_PAUSED, NOW).reason == "withheld:paused"


def test_past_due_keeps_access_through_its_grace_and_loses_it_after():
    since = NOW - timedelta(days=2)
    late = SubscriptionState("sub_1", "past_due", ("prod_pro",), past_due_since=since)
    rules = PolicyRules(past_due_grace=timedelta(days=3))
    during = decide("api_access", inputs(entitlements=(API,), subscriptions=(late,)), rules, NOW)
    assert during.granted and during.review_at == since + timedelta(days=3)
    after = decide("api_access", inputs(entitlements=(API,), subscriptions=(late,)), rules, NOW + timedelta(days=1))
    assert (after.granted, after.reason, after.review_at) == (False, "withheld:past_due", None)
    forever = decide("api_access", inputs(entitlements=(API,), subscriptions=(late,)), PolicyRules(), NOW)
    assert forever.granted and forever.review_at is None


def test_two_features_under_one_key_grant_while_either_survives():
    old = ActiveEntitlement("ent_old", "feat_old", "api_access")
    team = SubscriptionState("sub_3", "active", ("prod_team",))
    catalog = (CatalogLink("prod_pro", "feat_old", "api_access"), CatalogLink("prod_team", "feat_api", "api_access"))
    both = inputs(entitlements=(old, API), subscriptions=(PAUSED, team), catalog=catalog)
    decision = decide("api_access", both, WITHHOLD_PAUSED, NOW)
    assert decision.granted
    assert {s.detail for s in decision.sources if s.kind == "entitlement"} == {"feat_old", "feat_api"}


def test_the_catalog_rule_grants_what_the_products_carry_before_stripe_lists_it():
    carried = inputs(subscriptions=(ACTIVE,), catalog=(PRO_API,))
    assert "api_access" not in evaluate(carried, PolicyRules(), NOW)
    decision = evaluate(carried, PolicyRules(catalog_grants=True), NOW)["api_access"]
    assert (decision.granted, decision.reason) == (True, "catalog")
    assert ("product", "prod_pro", "feat_api") in [(s.kind, s.id, s.detail) for s in decision.sources]


def test_the_catalog_rule_does_not_grant_through_a_withheld_or_ended_subscription():
    rules = PolicyRules(withhold_statuses=frozenset({"paused"}), catalog_grants=True)
    assert evaluate(inputs(subscriptions=(PAUSED,), catalog=(PRO_API,)), rules, NOW) == {}
    canceled = SubscriptionState("sub_3", "canceled", ("prod_pro",))
    assert evaluate(inputs(subscriptions=(canceled,), catalog=(PRO_API,)), rules, NOW) == {}


def test_a_manual_grant_beats_withholding_and_expires_on_time():
    expires = NOW + timedelta(hours=1)
    given_ = inputs(entitlements=(API,), subscriptions=(PAUSED,), overrides=(grant(expires=expires),))
    decision = decide("api_access", given_, WITHHOLD_PAUSED, NOW)
    assert (decision.granted, decision.reason, decision.review_at) == (True, "manual_grant", expires)
    later = decide("api_access", given_, WITHHOLD_PAUSED, expires)
    assert (later.granted, later.reason) == (False, "withheld:paused")


def test_a_grant_on_top_of_stripe_keeps_stripe_as_the_reason_and_lists_the_grant():
    decision = decide("api_access", inputs(entitlements=(API,), overrides=(grant(),)), PolicyRules(), NOW)
    assert decision.reason == "stripe_entitlement"
    assert [s.kind for s in decision.sources] == ["entitlement", "grant"]


def test_an_explicit_denial_beats_stripe_and_a_grant_until_it_expires():
    ends = NOW + timedelta(days=2)
    denied = inputs(entitlements=(API,), overrides=(grant(), deny(expires=ends)))
    decision = decide("api_access", denied, PolicyRules(), NOW)
    assert (decision.granted, decision.reason) == (False, "manual_denial")
    assert decide("api_access", denied, PolicyRules(), ends).reason == "stripe_entitlement"


def test_every_layer_leaves_a_step_for_explain():
    decision = decide("api_access", inputs(entitlements=(API,), subscriptions=(PAUSED,)), WITHHOLD_PAUSED, NOW)
    assert [step.layer for step in decision.steps] == ["stripe", "subscription", "catalog", "override"]
    assert decision.steps[1].outcome == "withheld:paused"


# --- properties --------------------------------------------------------------------------------------------

KEYS = st.sampled_from(["api_access", "reports", "sso"])
STATUSES = st.sampled_from(["active", "trialing", "past_due", "paused", "unpaid", "canceled", "incomplete"])
PRODUCTS = st.sampled_from(["prod_a", "prod_b"])
WHEN = st.integers(min_value=-72, max_value=72).map(lambda hours: NOW + timedelta(hours=hours))


@st.composite
def any_inputs(draw: st.DrawFn) -> PolicyInputs:
    entitlements = draw(
        st.lists(
            st.builds(lambda n, k: ActiveEntitlement(f"ent_{n}", f"feat_{n}", k), st.integers(0, 5), KEYS), max_size=4
        )
    )
    subscriptions = draw(
        st.lists(
            st.builds(
                lambda n, status, products, since: SubscriptionState(f"sub_{n}", status, tuple(products), since),
                st.integers(0, 3),
                STATUSES,
                st.lists(PRODUCTS, max_size=2),
                st.one_of(st.none(), WHEN),
            ),
            max_size=3,
        )
    )
    catalog = draw(
        st.lists(
            st.builds(lambda p, n, k: CatalogLink(p, f"feat_{n}", k), PRODUCTS, st.integers(0, 5), KEYS), max_size=4
        )
    )
    overrides = draw(
        st.lists(
            st.builds(
                lambda n, k, kind, expires: Override(n, k, kind, expires, "ana", "why"),
                st.integers(1, 9),
                KEYS,
                st.sampled_from(["grant", "deny"]),
                st.one_of(st.none(), WHEN),
            ),
            max_size=3,
        )
    )
    return PolicyInputs(
        tuple(entitlements), tuple(subscriptions), tuple(catalog), tuple(overrides), draw(st.booleans())
    )


ANY_RULES = st.builds(
    PolicyRules,
    st.frozensets(STATUSES, max_size=3),
    st.one_of(st.none(), st.integers(0, 5).map(lambda days: timedelta(days=days))),
    st.booleans(),
)


@given(any_inputs(), ANY_RULES)
def test_an_active_denial_always_refuses_and_nothing_else_does_without_a_reason(given_inputs, rules):
    for key, decision in evaluate(given_inputs, rules, NOW).items():
        denied = any(o.lookup_key == key and o.kind == "deny" and o.active_at(NOW) for o in given_inputs.overrides)
        assert (decision.reason == "manual_denial") == denied
        if denied:
            assert not decision.granted


@given(any_inputs(), ANY_RULES)
def test_an_active_grant_without_a_denial_always_grants(given_inputs, rules):
    decisions = evaluate(given_inputs, rules, NOW)
    for override in given_inputs.overrides:
        key = override.lookup_key
        denied = any(o.lookup_key == key and o.kind == "deny" and o.active_at(NOW) for o in given_inputs.overrides)
        if override.kind == "grant" and override.active_at(NOW) and not denied:
            assert decisions[key].granted


@given(any_inputs())
def test_default_rules_grant_exactly_stripes_keys_plus_the_operators(given_inputs):
    decisions = evaluate(given_inputs, PolicyRules(), NOW)
    stripe_keys = {item.lookup_key for item in given_inputs.entitlements}
    for key in stripe_keys:
        denied = any(o.lookup_key == key and o.kind == "deny" and o.active_at(NOW) for o in given_inputs.overrides)
        assert decisions[key].granted is not denied
    assert {k for k, d in decisions.items() if d.reason == "catalog" or d.reason.startswith("withheld:")} == set()


@given(any_inputs(), ANY_RULES)
def test_a_review_moment_is_always_in_the_future_and_nothing_changes_before_it(given_inputs, rules):
    for key, decision in evaluate(given_inputs, rules, NOW).items():
        if decision.review_at is None:
            continue
        assert decision.review_at > NOW
        just_before = decide(key, given_inputs, rules, decision.review_at - timedelta(microseconds=1))
        assert (just_before.granted, just_before.reason) == (decision.granted, decision.reason)


@given(any_inputs(), ANY_RULES)
def test_the_answer_does_not_depend_on_the_order_of_the_inputs(given_inputs, rules):
    reversed_inputs = PolicyInputs(
        given_inputs.entitlements[::-1],
        given_inputs.subscriptions[::-1],
        given_inputs.catalog[::-1],
        given_inputs.overrides[::-1],
        given_inputs.synced,
    )
    forward = {k: (d.granted, d.reason) for k, d in evaluate(given_inputs, rules, NOW).items()}
    backward = {k: (d.granted, d.reason) for k, d in evaluate(reversed_inputs, rules, NOW).items()}
    assert forward == backward


@pytest.mark.parametrize("status", ["paused", "unpaid", "incomplete_expired"])
def test_each_listed_status_withholds_with_its_name(status):
    held = SubscriptionState("sub_1", status, ("prod_pro",))
    rules = PolicyRules(withhold_statuses=frozenset({status}))
    assert (
        decide("api_access", inputs(entitlements=(API,), subscriptions=(held,)), rules, NOW).reason
        == f"withheld:{status}"
    )
