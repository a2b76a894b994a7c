"""The simulator's JSON has the fields of Stripe's published fixtures (tests/fixtures/stripe/)."""

import json
from pathlib import Path

import pytest

from entitlement_sync.testing import FakeStripe

FIXTURES = Path(__file__).parent.parent / "fixtures" / "stripe"
API_KEY = "sk_test_simulator"


def fixture(name):
    return json.loads((FIXTURES / name).read_text())


def answer(stripe, path, **query):
    status, _, body = stripe.handle(
        "GET", path, {k: [v] for k, v in query.items()}, {"Authorization": f"Bearer {API_KEY}"}
    )
    assert status == 200, body
    return body


@pytest.fixture
def stripe():
    stripe = FakeStripe(API_KEY)
    stripe.product = stripe.create_product([stripe.create_feature("api_access")])
    stripe.subscribe("cus_1", [stripe.product])
    return stripe


def test_an_entitlements_list_has_the_fields_of_stripes_fixture(stripe):
    expected = fixture("list_active_entitlements.stripe_mock_response.json")
    body = answer(stripe, "/v1/entitlements/active_entitlements", customer="cus_1")
    assert set(body) == set(expected)
    assert body["url"] == expected["url"]
    assert set(body["data"][0]) == set(expected["data"][0])


def test_a_feature_has_the_fields_of_stripes_fixture(stripe):
    body = answer(stripe, "/v1/entitlements/features")
    assert set(body["data"][0]) == set(fixture("entitlements_feature.json"))


def test_a_product_feature_has_the_fields_of_stripes_fixture(stripe):
    [attachment] = answer(stripe, f"/v1/products/{stripe.product}/features")["data"]
    expected = fixture("product_feature.json")
    assert set(attachment) == set(expected)
    assert set(attachment["entitlement_feature"]) == set(expected["entitlement_feature"])


def test_a_summary_event_has_the_fields_of_stripes_fixtures(stripe):
    event = stripe.events.of_type("entitlements.active_entitlement_summary.updated")[0]
    assert set(fixture("event.json")) <= set(event)
    expected = fixture("entitlements_active_entitlement_summary.json")
    assert set(event["data"]["object"]) == set(expected)
    assert set(event["data"]["object"]["entitlements"]) == set(expected["entitlements"])


def test_a_subscription_carries_the_fields_the_service_reads(stripe):
    [subscription] = answer(stripe, "/v1/subscriptions")["data"]
    expected = fixture("subscription.json")
    read_by_the_service = {"id", "object", "customer", "status", "cancel_at_period_end", "items", "livemode"}
    assert read_by_the_service <= set(subscription) & set(expected)
    item_fields = {"id", "object", "current_period_end", "current_period_start", "price", "subscription"}
    assert item_fields <= set(subscription["items"]["data"][0]) & set(expected["items"]["data"][0])


def test_listed_events_say_whether_a_webhook_is_still_pending(stripe):
    first = stripe.events.all()[0]["id"]
    stripe.events.mark_delivered(first)
    pending = {event["id"]: event["pending_webhooks"] for event in answer(stripe, "/v1/events")["data"]}
    assert pending[first] == 0
    assert sorted(pending.values()) == [0, 1]
