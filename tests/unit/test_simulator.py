"""The simulated Stripe account: entitlements derived as Stripe does, and the events each change causes."""

import pytest

from entitlement_sync.testing import FakeStripe, SimulationError

SUMMARY = "entitlements.active_entitlement_summary.updated"


@pytest.fixture
def stripe():
    return FakeStripe()


def keys(stripe, customer):
    return sorted(key for _, key in stripe.truth(customer))


def types_of(events):
    return [event["type"] for event in events]


def test_a_subscription_grants_the_features_of_its_products(stripe):
    api, reports = stripe.create_feature("api_access"), stripe.create_feature("reports")
    stripe.subscribe("cus_1", [stripe.create_product([api, reports])])
    assert stripe.truth("cus_1") == {(api, "api_access"), (reports, "reports")}


def test_entitlements_are_the_union_of_all_granting_subscriptions_without_repeats(stripe):
    api, reports = stripe.create_feature("api_access"), stripe.create_feature("reports")
    stripe.subscribe("cus_1", [stripe.create_product([api])])
    stripe.subscribe("cus_1", [stripe.create_product([api, reports])])
    entitlements = stripe.active_entitlements("cus_1")
    assert sorted(item["lookup_key"] for item in entitlements) == ["api_access", "reports"]


def test_a_lookup_key_held_by_an_active_feature_cannot_be_taken(stripe):
    stripe.create_feature("reports")
    with pytest.raises(SimulationError, match="taken"):
        stripe.create_feature("reports")


def test_an_archived_feature_frees_its_key_yet_still_grants_so_one_key_can_be_held_twice(stripe):
    old = stripe.create_feature("reports")
    basic = stripe.create_product([old])
    subscription = stripe.subscribe("cus_1", [basic])
    stripe.archive_feature(old)
    new = stripe.create_feature("reports")
    stripe.change_products(subscription, [basic, stripe.create_product([new])])
    assert stripe.truth("cus_1") == {(old, "reports"), (new, "reports")}
    assert stripe.features[old].active is False


def test_an_archived_feature_cannot_be_attached_again(stripe):
    feature = stripe.create_feature("reports")
    stripe.archive_feature(feature)
    with pytest.raises(SimulationError, match="archived"):
        stripe.create_product([feature])


@pytest.mark.parametrize(
    "status, grants",
    [
        ("active", True),
        ("trialing", True),
        ("past_due", True),
        ("canceled", False),
        ("incomplete", False),
        ("incomplete_expired", False),
        ("unpaid", False),
        ("paused", False),
    ],
)
def test_only_active_trialing_and_past_due_subscriptions_grant(stripe, status, grants):
    product = stripe.create_product([stripe.create_feature("api_access")])
    stripe.subscribe("cus_1", [product], status=status)
    assert keys(stripe, "cus_1") == (["api_access"] if grants else [])


def test_cancellation_revokes_and_emits_deleted_then_a_summary(stripe):
    subscription = stripe.subscribe("cus_1", [stripe.create_product([stripe.create_feature("api_access")])])
    before = len(stripe.events.all())
    stripe.cancel(subscription)
    assert keys(stripe, "cus_1") == []
    assert types_of(stripe.events.all()[before:]) == ["customer.subscription.deleted", SUMMARY]
    assert stripe.events.all()[-1]["data"]["object"]["entitlements"]["data"] == []


def test_a_canceled_subscription_stays_canceled(stripe):
    subscription = stripe.subscribe("cus_1", [stripe.create_product()])
    stripe.cancel(subscription)
    with pytest.raises(SimulationError, match="canceled for good"):
        stripe.resume(subscription)


def test_a_new_subscription_emits_created_then_a_summary_and_a_change_that_grants_nothing_new_no_summary(
    stripe,
):
    api = stripe.create_feature("api_access")
    subscription = stripe.subscribe("cus_1", [stripe.create_product([api])])
    stripe.change_products(subscription, [stripe.create_product([api])])
    assert types_of(stripe.events.all()) == [
        "customer.subscription.created",
        SUMMARY,
        "customer.subscription.updated",
    ]


def test_a_trial_ending_into_paused_revokes_without_a_summary_and_resuming_sends_one(stripe):
    subscription = stripe.subscribe(
        "cus_1", [stripe.create_product([stripe.create_feature("api_access")])], trial_days=7
    )
    assert keys(stripe, "cus_1") == ["api_access"]
    before = len(stripe.events.all())
    stripe.warn_trial_ending(subscription)
    stripe.end_trial(subscription, into="paused")
    assert keys(stripe, "cus_1") == []
    assert types_of(stripe.events.all()[before:]) == [
        "customer.subscription.trial_will_end",
        "customer.subscription.updated",
        "customer.subscription.paused",
    ]
    stripe.resume(subscription)
    assert types_of(stripe.events.all()[-3:]) == [
        "customer.subscription.updated",
        "customer.subscription.resumed",
        SUMMARY,
    ]


def test_an_update_event_carries_the_previous_status(stripe):
    subscription = stripe.subscribe("cus_1", [stripe.create_product()], trial_days=3)
    stripe.end_trial(subscription)
    updated = stripe.events.of_type("customer.subscription.updated")[-1]
    assert updated["data"]["previous_attributes"] == {"status": "trialing"}
    assert updated["data"]["object"]["status"] == "active"


def test_the_summary_event_carries_at_most_ten_entitlements_and_says_there_are_more(stripe):
    features = [stripe.create_feature(f"feature_{index}") for index in range(12)]
    stripe.subscribe("cus_1", [stripe.create_product(features)])
    summary = stripe.events.of_type(SUMMARY)[-1]["data"]["object"]
    assert summary["customer"] == "cus_1"
    assert len(summary["entitlements"]["data"]) == 10
    assert summary["entitlements"]["has_more"] is True
    assert len(stripe.active_entitlements("cus_1")) == 12


def test_entitlement_ids_are_stable_per_customer_and_feature(stripe):
    product = stripe.create_product([stripe.create_feature("api_access")])
    first = stripe.subscribe("cus_1", [product])
    stripe.subscribe("cus_2", [product])
    id_before = stripe.active_entitlements("cus_1")[0]["id"]
    stripe.cancel(first)
    stripe.subscribe("cus_1", [product])
    assert stripe.active_entitlements("cus_1")[0]["id"] == id_before
    assert stripe.active_entitlements("cus_2")[0]["id"] != id_before


def test_catalog_changes_reach_a_subscriber_at_the_next_period(stripe):
    product = stripe.create_product([stripe.create_feature("api_access")])
    subscription = stripe.subscribe("cus_1", [product])
    stripe.attach_feature(product, stripe.create_feature("reports"))
    assert keys(stripe, "cus_1") == ["api_access"]
    stripe.renew_subscription(subscription)
    assert keys(stripe, "cus_1") == ["api_access", "reports"]


def test_deleting_a_customer_cancels_their_subscriptions(stripe):
    stripe.subscribe("cus_1", [stripe.create_product([stripe.create_feature("api_access")])])
    stripe.delete_customer("cus_1")
    assert stripe.truth("cus_1") == set()
    assert types_of(stripe.events.all()[-2:]) == ["customer.subscription.deleted", SUMMARY]


def test_set_entitlements_overrides_subscriptions_and_announces_the_change(stripe):
    stripe.set_entitlements("cus_1", [("feat_a", "a"), ("feat_b", "b")])
    assert stripe.truth("cus_1") == {("feat_a", "a"), ("feat_b", "b")}
    assert types_of(stripe.events.all()) == [SUMMARY]


def test_the_event_search_keeps_thirty_days_and_filters_by_type_and_time():
    now = [1_000_000_000.0]
    stripe = FakeStripe(clock=lambda: now[0])
    subscription = stripe.subscribe("cus_1", [stripe.create_product([stripe.create_feature("api_access")])])
    now[0] += 10 * 86400
    stripe.cancel(subscription)
    assert types_of(stripe.events.search(["customer.subscription.*"])) == [
        "customer.subscription.deleted",
        "customer.subscription.created",
    ]
    assert len(stripe.events.search(created={"gte": int(now[0])})) == 2
    now[0] += 25 * 86400
    # The sign-up is now 35 days old and drops out of the API; the cancellation, 25 days old, stays.
    assert types_of(stripe.events.search()) == [SUMMARY, "customer.subscription.deleted"]
    assert len(stripe.events.all()) == 4


def test_a_deleted_customer_cannot_subscribe_again(stripe):
    stripe.delete_customer("cus_1")
    with pytest.raises(SimulationError, match="deleted"):
        stripe.subscribe("cus_1", [stripe.create_product()])


def test_a_subscriptions_period_follows_the_models_clock():
    stripe = FakeStripe(clock=lambda: 1_700_000_000)
    subscription = stripe.subscribe("cus_1", [stripe.create_product()])
    [item] = stripe.subscriptions[subscription].as_json()["items"]["data"]
    assert (item["current_period_start"], item["current_period_end"]) == (
        1_700_000_000,
        1_700_000_000 + 30 * 86400,
    )


def test_only_a_trialing_subscription_can_end_its_trial(stripe):
    subscription = stripe.subscribe("cus_1", [stripe.create_product()])
    with pytest.raises(SimulationError, match="not trialing"):
        stripe.end_trial(subscription)
