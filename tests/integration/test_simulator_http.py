"""The simulator's API over HTTP, through the real stripe-python client and our gateway."""

import pytest
import requests
import stripe as stripe_sdk

from entitlement_sync.errors import CustomerNotFound, StripeUnavailable
from entitlement_sync.ports import CustomerState
from entitlement_sync.stripe_gateway import StripeGateway
from entitlement_sync.testing import FakeStripe, StripeSimulatorServer

API_KEY = "sk_test_simulator"


@pytest.fixture
def stripe():
    return FakeStripe(API_KEY)


@pytest.fixture
def server(stripe):
    with StripeSimulatorServer(stripe) as server:
        yield server


@pytest.fixture
def client(server):
    return client_for(server.url)


def client_for(url, key=API_KEY, timeout=5.0):
    return stripe_sdk.StripeClient(
        key,
        base_addresses={"api": url},
        http_client=stripe_sdk.RequestsClient(timeout=timeout),
        max_network_retries=0,
    )


def customer_with_features(stripe, count, customer="cus_1"):
    features = [stripe.create_feature(f"feature_{index:02d}") for index in range(count)]
    stripe.subscribe(customer, [stripe.create_product(features)])
    return features


def test_active_entitlements_page_by_ten_by_default_and_follow_the_cursor(stripe, client):
    features = customer_with_features(stripe, 25)
    first = client.v1.entitlements.active_entitlements.list({"customer": "cus_1"})
    assert (len(first.data), first.has_more) == (10, True)
    every = [item.feature for item in first.auto_paging_iter()]
    assert every == features
    assert len(stripe.calls_to("/v1/entitlements/active_entitlements")) == 3


def test_the_gateway_reads_every_entitlement_across_pages(stripe, server):
    features = customer_with_features(stripe, 130)
    gateway = StripeGateway(API_KEY, server.url, timeout_seconds=5)
    assert [item.feature_id for item in gateway.list_active_entitlements("cus_1")] == features
    assert len(stripe.calls_to("/v1/entitlements/active_entitlements")) == 2  # limit=100, then 30


@pytest.mark.parametrize("limit", [0, 101, -1])
def test_a_limit_outside_one_to_a_hundred_is_a_400_on_param_limit(client, limit):
    with pytest.raises(stripe_sdk.InvalidRequestError) as raised:
        client.v1.entitlements.active_entitlements.list({"customer": "cus_1", "limit": limit})
    assert (raised.value.http_status, raised.value.param) == (400, "limit")


def test_limits_one_and_a_hundred_are_accepted(stripe, client):
    customer_with_features(stripe, 3)
    assert len(client.v1.entitlements.active_entitlements.list({"customer": "cus_1", "limit": 1}).data) == 1
    assert len(client.v1.entitlements.active_entitlements.list({"customer": "cus_1", "limit": 100}).data) == 3


def test_a_deleted_customer_is_a_404_resource_missing_and_the_gateway_asks_who_it_is(stripe, client, server):
    customer_with_features(stripe, 2)
    stripe.delete_customer("cus_1")
    with pytest.raises(stripe_sdk.InvalidRequestError) as raised:
        client.v1.entitlements.active_entitlements.list({"customer": "cus_1"})
    error = raised.value
    assert (error.http_status, error.code, error.param) == (404, "resource_missing", "customer")
    gateway = StripeGateway(API_KEY, server.url, timeout_seconds=5)
    with pytest.raises(CustomerNotFound):
        gateway.list_active_entitlements("cus_1")
    assert gateway.customer_state("cus_1") is CustomerState.DELETED


def test_a_missing_customer_param_is_a_400(client):
    with pytest.raises(stripe_sdk.InvalidRequestError) as raised:
        client.v1.entitlements.active_entitlements.list({})
    assert (raised.value.http_status, raised.value.param) == (400, "customer")


def test_a_wrong_api_key_is_an_authentication_error(server):
    with pytest.raises(stripe_sdk.AuthenticationError):
        client_for(server.url, key="sk_test_wrong").v1.entitlements.features.list()


def test_expanding_data_feature_embeds_the_feature_object(stripe, client):
    [feature] = customer_with_features(stripe, 1)
    page = client.v1.entitlements.active_entitlements.list({"customer": "cus_1", "expand": ["data.feature"]})
    assert page.data[0].feature.id == feature
    assert page.data[0].feature.object == "entitlements.feature"


def test_features_list_archived_ones_too_and_filter_by_archived_and_lookup_key(stripe, client):
    old = stripe.create_feature("reports")
    stripe.archive_feature(old)
    new = stripe.create_feature("reports")
    other = stripe.create_feature("api_access")
    assert [f.id for f in client.v1.entitlements.features.list().data] == [other, new, old]
    assert [f.id for f in client.v1.entitlements.features.list({"archived": True}).data] == [old]
    assert [f.id for f in client.v1.entitlements.features.list({"lookup_key": "reports"}).data] == [new, old]


def test_product_features_embed_the_feature_and_an_unknown_product_is_a_404(stripe, client):
    feature = stripe.create_feature("api_access")
    product = stripe.create_product([feature])
    [attachment] = client.v1.products.features.list(product).data
    assert attachment.object == "product_feature"
    assert attachment.id.startswith("prodft_")
    assert attachment.entitlement_feature.id == feature
    with pytest.raises(stripe_sdk.InvalidRequestError) as raised:
        client.v1.products.features.list("prod_missing")
    assert (raised.value.http_status, raised.value.code) == (404, "resource_missing")


def test_subscriptions_leave_out_canceled_ones_unless_status_is_all(stripe, client):
    product = stripe.create_product()
    kept = stripe.subscribe("cus_1", [product])
    canceled = stripe.subscribe("cus_1", [product])
    stripe.cancel(canceled)
    other = stripe.subscribe("cus_2", [product])
    assert [s.id for s in client.v1.subscriptions.list().data] == [other, kept]
    every = client.v1.subscriptions.list({"status": "all", "customer": "cus_1", "limit": 1})
    assert [s.id for s in every.auto_paging_iter()] == [canceled, kept]


def test_events_are_listed_newest_first_and_filter_by_type_time_and_delivery(stripe, client):
    subscription = stripe.subscribe("cus_1", [stripe.create_product([stripe.create_feature("api_access")])])
    stripe.cancel(subscription)
    listed = client.v1.events.list({"types": ["customer.subscription.created", "customer.subscription.deleted"]})
    assert [e.type for e in listed.data] == ["customer.subscription.deleted", "customer.subscription.created"]
    first = stripe.events.all()[0]
    stripe.events.mark_delivered(first["id"])
    undelivered = client.v1.events.list({"delivery_success": False, "created": {"gte": first["created"]}})
    assert len(undelivered.data) == 3
    assert first["id"] not in [e.id for e in undelivered.data]


def test_a_scripted_429_is_a_rate_limit_error_and_the_gateway_calls_stripe_unavailable(stripe, client, server):
    stripe.fail_next(429, times=2)
    with pytest.raises(stripe_sdk.RateLimitError) as raised:
        client.v1.entitlements.active_entitlements.list({"customer": "cus_1"})
    assert raised.value.headers["Stripe-Rate-Limited-Reason"] == "global-rate"
    with pytest.raises(StripeUnavailable, match="429"):
        StripeGateway(API_KEY, server.url, timeout_seconds=5).list_active_entitlements("cus_1")


def test_an_unknown_url_is_a_404_in_stripes_error_shape(server):
    response = requests.get(f"{server.url}/v1/nothing", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=5)
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_ending_before_pages_backwards(stripe, client):
    features = customer_with_features(stripe, 5)
    ids = [item.id for item in client.v1.entitlements.active_entitlements.list({"customer": "cus_1"}).data]
    page = client.v1.entitlements.active_entitlements.list({"customer": "cus_1", "ending_before": ids[4], "limit": 2})
    assert ([item.feature for item in page.data], page.has_more) == (features[2:4], True)


def test_single_objects_can_be_retrieved_by_id_and_unknown_ids_are_404(stripe, client):
    [feature] = customer_with_features(stripe, 1)
    [subscription] = stripe.subscriptions
    entitlement = stripe.active_entitlements("cus_1")[0]["id"]
    assert client.v1.entitlements.features.retrieve(feature).lookup_key == "feature_00"
    assert client.v1.entitlements.active_entitlements.retrieve(entitlement).feature == feature
    assert client.v1.subscriptions.retrieve(subscription).customer == "cus_1"
    with pytest.raises(stripe_sdk.InvalidRequestError) as raised:
        client.v1.subscriptions.retrieve("sub_missing")
    assert (raised.value.http_status, raised.value.code) == (404, "resource_missing")


def test_a_5xx_is_an_api_error_for_stripe_python(stripe, client):
    stripe.faults.server_error_share = 1.0
    with pytest.raises(stripe_sdk.APIError) as raised:
        client.v1.entitlements.features.list()
    assert raised.value.http_status == 500
    assert stripe.faults.injected["server_error"] == 1


def test_a_timeout_outlasts_the_clients_timeout(stripe, server):
    stripe.faults.timeout_share, stripe.faults.timeout_seconds = 1.0, 30.0
    with pytest.raises(stripe_sdk.APIConnectionError):
        client_for(server.url, timeout=0.2).v1.entitlements.features.list()
    assert stripe.faults.injected["timeout"] == 1


def test_a_real_shaped_subscription_reads_as_decimals_and_a_float_in_stripe_python(stripe, client):
    stripe.subscribe("cus_1", [stripe.create_product()], with_coupon=True)
    [subscription] = client.v1.subscriptions.list().data
    assert str(subscription["items"].data[0].price.unit_amount_decimal) == "2000"
    assert subscription.discounts[0].source.coupon.percent_off == 25.5
    assert client.v1.customers.retrieve("cus_1").id == "cus_1"
