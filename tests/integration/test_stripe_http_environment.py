"""The gateway's HTTP client reads the proxy for Stripe once, when it is built, and never reads `.netrc`: through
the simulator over real HTTP, which answers absolute-URI requests as an HTTP proxy receives them."""

import pytest

from entitlement_sync.errors import StripeUnavailable
from entitlement_sync.stripe_gateway import StripeGateway
from entitlement_sync.stripe_http import _SessionPerThread
from entitlement_sync.testing import FakeStripe, StripeSimulatorServer

API_KEY = "sk_test_simulator"
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens, a connection is refused at once
NOWHERE = "http://stripe.invalid"  # `.invalid` never resolves: only a proxy can carry a request there


@pytest.fixture
def server():
    stripe = FakeStripe(API_KEY)
    stripe.set_entitlements("cus_1", [("feat_api", "api_access")])
    with StripeSimulatorServer(stripe) as server:
        yield server


@pytest.fixture(autouse=True)
def no_proxy_variables(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "NETRC"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def lookup_keys(gateway):
    return [entitlement.lookup_key for entitlement in gateway.list_active_entitlements("cus_1")]


def test_the_proxy_set_when_the_gateway_is_built_carries_its_requests_after_the_variable_is_gone(server, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", server.url)
    gateway = StripeGateway(API_KEY, NOWHERE, 2)
    monkeypatch.delenv("HTTP_PROXY")

    assert lookup_keys(gateway) == ["api_access"]
    assert [call.path for call in server.stripe.calls] == ["/v1/entitlements/active_entitlements"]


def test_a_proxy_set_after_the_gateway_is_built_is_not_used(server, monkeypatch):
    gateway = StripeGateway(API_KEY, server.url, 2)
    monkeypatch.setenv("HTTP_PROXY", UNREACHABLE)

    assert lookup_keys(gateway) == ["api_access"]


def test_no_proxy_naming_stripes_host_sends_straight_to_it(server, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", UNREACHABLE)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert lookup_keys(StripeGateway(API_KEY, server.url, 2)) == ["api_access"]

    monkeypatch.delenv("NO_PROXY")
    with pytest.raises(StripeUnavailable):  # the same proxy, not bypassed: the request goes to it and is refused
        StripeGateway(API_KEY, server.url, 2).list_active_entitlements("cus_1")


def test_a_netrc_entry_for_stripes_host_does_not_replace_the_api_key(server, monkeypatch, tmp_path):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password something\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("HOME", str(tmp_path))

    # With requests' defaults, the entry would turn the key's Bearer header into Basic auth: a 401 here.
    assert lookup_keys(StripeGateway(API_KEY, server.url, 2)) == ["api_access"]


@pytest.mark.parametrize("other", [{}, {"cert": None}])
def test_a_request_reaches_stripe_with_the_arguments_the_direct_path_knows_or_others(server, other):
    # Unknown arguments (a later stripe-python's) go through requests' own Session.request rather than fail.
    sessions = _SessionPerThread({})
    url = f"{server.url}/v1/entitlements/active_entitlements?customer=cus_1"
    response = sessions.request("get", url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=2, **other)

    assert response.status_code == 200
    assert [item["lookup_key"] for item in response.json()["data"]] == ["api_access"]
