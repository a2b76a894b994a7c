"""The simulator's JSON is Stripe's published objects with only the ids and the model's fields replaced."""

import json
from decimal import Decimal
from pathlib import Path

import pytest
import stripe as stripe_sdk

from entitlement_sync.testing import FakeStripe
from entitlement_sync.testing.shapes import stripe_object

PACKAGE_FIXTURES = Path(stripe_object.__code__.co_filename).parent / "fixtures"
SHARED_FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "stripe-fixtures"
API_KEY = "sk_test_simulator"


def answer(stripe, path, **query):
    status, _, body = stripe.handle(
        "GET", path, {k: [v] for k, v in query.items()}, {"Authorization": f"Bearer {API_KEY}"}
    )
    assert status == 200, body
    return body


def same_keys_all_the_way_down(ours, theirs, where="$"):
    """Every object in `ours` has exactly the keys of its counterpart in Stripe's fixture."""
    if isinstance(theirs, dict) and isinstance(ours, dict):
        assert set(ours) == set(theirs), where
        for key in set(theirs) - {"metadata"}:  # metadata is the account's own free-form map
            same_keys_all_the_way_down(ours[key], theirs[key], f"{where}.{key}")
    elif isinstance(theirs, list) and theirs and isinstance(ours, list):
        for index, item in enumerate(ours):
            same_keys_all_the_way_down(item, theirs[0], f"{where}[{index}]")


@pytest.fixture
def stripe():
    stripe = FakeStripe(API_KEY)
    stripe.product = stripe.create_product([stripe.create_feature("api_access")])
    stripe.subscription = stripe.subscribe("cus_1", [stripe.product], with_coupon=True)
    return stripe


@pytest.mark.parametrize("name", sorted(path.name for path in PACKAGE_FIXTURES.glob("*.json")))
def test_the_packaged_fixtures_are_verbatim_copies_of_stripes(name):
    if not SHARED_FIXTURES.is_dir():
        pytest.skip(f"{SHARED_FIXTURES} is absent: nothing to compare with")
    assert (PACKAGE_FIXTURES / name).read_bytes() == (SHARED_FIXTURES / name).read_bytes()


def test_an_entitlements_list_is_stripes_fixture_in_every_key(stripe):
    body = answer(stripe, "/v1/entitlements/active_entitlements", customer="cus_1")
    same_keys_all_the_way_down(body, stripe_object("list_active_entitlements.stripe_mock_response"))
    assert body["url"] == "/v1/entitlements/active_entitlements"


def test_a_feature_and_a_product_feature_are_stripes_fixtures_in_every_key(stripe):
    same_keys_all_the_way_down(
        answer(stripe, "/v1/entitlements/features")["data"][0], stripe_object("entitlements_feature")
    )
    [attachment] = answer(stripe, f"/v1/products/{stripe.product}/features")["data"]
    same_keys_all_the_way_down(attachment, stripe_object("product_feature"))


def test_a_summary_event_is_stripes_fixture_with_each_feature_expanded(stripe):
    event = stripe.events.of_type("entitlements.active_entitlement_summary.updated")[0]
    summary = stripe_object("entitlements_active_entitlement_summary")
    same_keys_all_the_way_down(event, stripe_object("event", data={"object": summary}))
    assert event["data"]["object"]["entitlements"]["data"][0]["feature"]["lookup_key"] == "api_access"


def test_a_subscription_is_stripes_fixture_with_its_items_prices_plans_and_discount(stripe):
    [subscription] = answer(stripe, "/v1/subscriptions")["data"]
    expected = stripe_object("subscription", pending_update=None, pause_collection=None, transfer_data=None)
    same_keys_all_the_way_down({**subscription, "discounts": []}, expected)
    [item] = subscription["items"]["data"]
    same_keys_all_the_way_down(item, stripe_object("subscription_item"))
    assert (item["price"]["product"], item["plan"]["product"]) == (stripe.product, stripe.product)  # unexpanded
    assert (item["price"]["unit_amount_decimal"], item["plan"]["amount_decimal"]) == ("2000", "2000")
    [discount] = subscription["discounts"]
    same_keys_all_the_way_down(discount, stripe_object("discount"))
    assert discount["source"]["coupon"] == stripe_object("coupon")
    assert discount["source"]["coupon"]["percent_off"] == 25.5


def test_a_subscription_event_becomes_decimals_and_floats_in_stripe_python(stripe):
    """Why the shapes matter: stripe-python turns the decimal strings into `Decimal`, which `json` cannot write."""
    event = stripe.events.of_type("customer.subscription.created")[0]
    parsed = stripe_sdk.Event.construct_from(event, API_KEY)
    item = parsed.data.object["items"].data[0]
    assert item.price.unit_amount_decimal == Decimal("2000")
    assert parsed.data.object.discounts[0].source.coupon.percent_off == 25.5
    with pytest.raises(TypeError, match="Decimal"):
        json.dumps(parsed.to_dict())


def test_a_customer_deleted_or_never_known_is_answered_as_stripe_does(stripe):
    assert answer(stripe, "/v1/customers/cus_1")["id"] == "cus_1"
    same_keys_all_the_way_down(answer(stripe, "/v1/customers/cus_1"), stripe_object("customer", discount=None))
    stripe.delete_customer("cus_1")
    assert answer(stripe, "/v1/customers/cus_1") == {"id": "cus_1", "object": "customer", "deleted": True}
    status, _, body = stripe.handle("GET", "/v1/customers/cus_never", {}, {"Authorization": f"Bearer {API_KEY}"})
    assert (status, body["error"]["code"]) == (404, "resource_missing")


def test_listed_events_say_whether_a_webhook_is_still_pending(stripe):
    first = stripe.events.all()[0]["id"]
    stripe.events.mark_delivered(first)
    pending = {event["id"]: event["pending_webhooks"] for event in answer(stripe, "/v1/events")["data"]}
    assert pending[first] == 0
    assert sorted(set(pending.values())) == [0, 1]
