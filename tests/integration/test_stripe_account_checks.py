"""Who a customer and a key belong to, as Stripe's API tells it: the simulator answers in Stripe's shapes, and the
gateway reads them (a deleted customer, an unknown one, another account's key, a restricted key)."""

import pytest
import stripe as stripe_sdk

from entitlement_sync.errors import CustomerNotFound, StripeAccountUnreadable, WrongStripeAccount
from entitlement_sync.ports import CustomerState
from entitlement_sync.stripe_gateway import StripeGateway
from entitlement_sync.sync import fetch_entitlements
from entitlement_sync.testing import FakeStripe, StripeSimulatorServer
from entitlement_sync.testing.shapes import stripe_object

API_KEY = "sk_test_simulator"
OTHER_KEY = "sk_test_of_another_account"


@pytest.fixture
def stripe():
    fake = FakeStripe(API_KEY)
    api = fake.create_feature("api_access")
    fake.subscribe("cus_1", [fake.create_product([api])])
    return fake


@pytest.fixture
def server(stripe):
    with StripeSimulatorServer(stripe) as server:
        yield server


def gateway(server, key=API_KEY):
    return StripeGateway(key, server.url, timeout_seconds=5)


def client(server, key=API_KEY):
    return stripe_sdk.StripeClient(key, base_addresses={"api": server.url}, max_network_retries=0)


def test_a_customer_has_the_fields_of_stripes_customer_fixture(stripe, server):
    answered = client(server).v1.customers.retrieve("cus_1").to_dict(recursive=True)
    fixture = stripe_object("customer")  # Stripe's published customer.json
    assert set(answered) <= set(fixture)
    assert {"id", "object", "created", "livemode", "metadata", "invoice_settings"} <= set(answered)
    assert (answered["id"], answered["object"]) == ("cus_1", "customer")


def test_a_deleted_customer_is_answered_deleted_true_not_404(stripe, server):
    stripe.delete_customer("cus_1")
    answered = client(server).v1.customers.retrieve("cus_1")
    assert answered.to_dict() == {"id": "cus_1", "object": "customer", "deleted": True}
    assert gateway(server).customer_state("cus_1") is CustomerState.DELETED
    assert fetch_entitlements(gateway(server), "cus_1").entitlements == []


def test_an_unknown_customer_is_a_404_resource_missing(stripe, server):
    with pytest.raises(stripe_sdk.InvalidRequestError) as raised:
        client(server).v1.customers.retrieve("cus_never")
    assert (raised.value.http_status, raised.value.code) == (404, "resource_missing")
    assert "No such customer" in str(raised.value)
    assert gateway(server).customer_state("cus_never") is CustomerState.UNKNOWN
    assert gateway(server).customer_state("cus_1") is CustomerState.EXISTS


def test_the_key_of_another_account_sees_none_of_our_customers(stripe, server):
    other_account = stripe.add_key_of_another_account(OTHER_KEY)
    wrong = gateway(server, OTHER_KEY)
    with pytest.raises(CustomerNotFound, match="No such customer"):
        wrong.list_active_entitlements("cus_1")
    assert wrong.customer_state("cus_1") is CustomerState.UNKNOWN
    assert wrong.retrieve_account().id == other_account != gateway(server).retrieve_account().id
    assert wrong.list_one_customer() is None
    assert gateway(server).list_one_customer() == "cus_1"


def test_fetching_with_another_accounts_key_fails_naming_the_key_and_revokes_nothing(stripe, server):
    stripe.add_key_of_another_account(OTHER_KEY)
    with pytest.raises(WrongStripeAccount) as raised:
        fetch_entitlements(gateway(server, OTHER_KEY), "cus_1")
    message = str(raised.value)
    assert "STRIPE_API_KEY" in message and "another account or mode" in message and "cus_1" in message
    assert [call.path for call in stripe.calls[-2:]] == ["/v1/entitlements/active_entitlements", "/v1/customers/cus_1"]


def test_a_restricted_key_may_not_read_the_account_and_says_so(stripe, server):
    stripe.api_key = "rk_test_restricted"
    with pytest.raises(StripeAccountUnreadable, match="restricted"):
        gateway(server, "rk_test_restricted").retrieve_account()
    assert gateway(server, "rk_test_restricted").list_active_entitlements("cus_1")
