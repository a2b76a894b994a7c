"""Webhook verification against Stripe's scheme: v1 = HMAC-SHA256(secret, f"{t}.{body}")."""

import time

import pytest

from entitlement_sync.errors import InvalidWebhook
from entitlement_sync.stripe_signature import WebhookVerifier
from entitlement_sync.testing import sign

BODY = b'{"id": "evt_1", "object": "event"}'
verifier = WebhookVerifier(("whsec_new", "whsec_old"), tolerance_seconds=300)


def reason(body: bytes, header: str | None) -> str:
    with pytest.raises(InvalidWebhook) as raised:
        verifier.verify(body, header)
    return str(raised.value)


def test_a_signature_from_any_configured_secret_passes():
    verifier.verify(BODY, sign(BODY, "whsec_new"))
    verifier.verify(BODY, sign(BODY, "whsec_old"))


def test_a_header_with_two_v1_signatures_passes_when_either_matches():
    now = int(time.time())
    good = sign(BODY, "whsec_new", now).split("v1=")[1]
    WebhookVerifier(("whsec_new",)).verify(BODY, f"t={now},v1={'0' * 64},v1={good}")


def test_missing_header_is_refused():
    assert reason(BODY, None) == "missing Stripe-Signature header"


@pytest.mark.parametrize("header", ["garbage", "t=abc,v1=00", "v1=abcdef", f"t={int(time.time())},v0=abc"])
def test_malformed_header_is_refused(header):
    assert reason(BODY, header) == "malformed Stripe-Signature header"


def test_wrong_secret_is_refused():
    assert reason(BODY, sign(BODY, "whsec_attacker")) == "signature does not match"


def test_tampered_body_is_refused():
    assert reason(BODY + b" ", sign(BODY, "whsec_new")) == "signature does not match"


def test_timestamp_older_than_tolerance_is_refused():
    assert reason(BODY, sign(BODY, "whsec_new", int(time.time()) - 301)) == "signature timestamp too old"


def test_timestamp_beyond_tolerance_in_the_future_is_refused():
    assert reason(BODY, sign(BODY, "whsec_new", int(time.time()) + 301)) == "signature timestamp is in the future"


def test_body_that_is_not_utf8_is_refused():
    body = b"\xff\xfe"
    assert reason(body, sign(body, "whsec_new")) == "body is not UTF-8"


def test_no_configured_secret_refuses_everything():
    with pytest.raises(InvalidWebhook, match="no webhook secret configured"):
        WebhookVerifier(()).verify(BODY, sign(BODY, "whsec_new"))
