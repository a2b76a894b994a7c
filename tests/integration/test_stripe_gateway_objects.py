"""The gateway's raw read of active entitlements (`StripeClient.raw_request`, no StripeObjects) fed Stripe's own
objects verbatim: the published list response, an item whose `feature` is expanded, and a second page."""

import responses

from entitlement_sync.ordering import UNKNOWN
from entitlement_sync.stripe_gateway import StripeGateway
from entitlement_sync.testing.shapes import stripe_object

BASE = "https://api.stripe.com"
URL = f"{BASE}/v1/entitlements/active_entitlements"
DATE = {"Date": "Sun, 29 Nov 2026 19:00:00 GMT"}


def test_stripes_published_list_and_an_expanded_feature_read_as_our_entitlements():
    published = stripe_object("list_active_entitlements.stripe_mock_response", has_more=True)
    plain = published["data"][0]
    expanded = stripe_object(
        "entitlements_active_entitlement",
        id="ent_test_second",
        feature=stripe_object("entitlements_feature", id="feat_test_second", lookup_key="ai_assistant"),
        lookup_key="ai_assistant",
    )
    second_page = stripe_object("list_active_entitlements.stripe_mock_response", data=[expanded], has_more=False)
    with responses.RequestsMock() as mock:
        mock.get(URL, json=published, headers=DATE)
        mock.get(URL, json=second_page, headers=DATE)
        read = StripeGateway("sk_test_x", BASE, 2).read_active_entitlements("cus_1")
        assert "starting_after" not in mock.calls[0].request.url
        assert f"starting_after={plain['id']}" in mock.calls[1].request.url
    assert [(e.id, e.feature_id, e.lookup_key) for e in read.entitlements] == [
        (plain["id"], plain["feature"], plain["lookup_key"]),
        ("ent_test_second", "feat_test_second", "ai_assistant"),
    ]
    assert read.window != UNKNOWN  # dated by the responses' `Date`, which the raw read keeps
