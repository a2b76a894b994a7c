"""Outbound access webhooks without I/O: the setting, the payload, the signature (checked with the Standard Webhooks
library's own `Webhook.verify`), and what the outbox writes for each kind of change."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy.orm import Session
from standardwebhooks import Webhook, WebhookVerificationError

from entitlement_sync.cli import main
from entitlement_sync.cli import run as run_commands
from entitlement_sync.models import EffectiveAccessChange, WebhookDelivery
from entitlement_sync.outbound import signed_headers
from entitlement_sync.outbox import Outbox, message
from entitlement_sync.policy import features_of
from entitlement_sync.ports import WebhookSubscriber
from entitlement_sync.redaction import without_password
from entitlement_sync.settings import Settings
from entitlement_sync.settings_parsers import parse_webhook_subscribers
from tests.fakes import RecordingDeliveryQueue

SECRET = "whsec_" + base64.b64encode(b"a-subscriber-secret-of-32-bytes!").decode()
OTHER = "whsec_" + base64.b64encode(b"another-secret").decode()
AT = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def change(kind: str = "granted", sources: list[dict[str, str]] | None = None) -> EffectiveAccessChange:
    return EffectiveAccessChange(
        customer_id="cus_1",
        lookup_key="api_access",
        change=kind,
        granted=kind == "granted",
        reason="stripe_entitlement" if kind == "granted" else "no_entitlement",
        previous_reason=None,
        sources=sources or [],
        cause="evt_1",
        changed_at=AT,
    )


# --- the setting -------------------------------------------------------------------------------------------------


def test_access_webhook_urls_name_a_url_and_its_secret_per_entry():
    settings = Settings.from_env({"ACCESS_WEBHOOK_URLS": f" https://a.example/hook|{SECRET} , http://b:8080/x|{OTHER}"})
    assert settings.access_webhooks == (
        WebhookSubscriber("https://a.example/hook", SECRET),
        WebhookSubscriber("http://b:8080/x", OTHER),
    )
    assert Settings.from_env({}).access_webhooks == ()


def test_the_settings_repr_shows_the_subscribers_urls_but_never_their_secrets():
    settings = Settings.from_env({"ACCESS_WEBHOOK_URLS": f"https://user:pw@a.example/hook|{SECRET}"})
    shown = repr(settings)
    assert "https://user:***@a.example/hook|whsec_<redacted>" in shown
    assert SECRET.removeprefix("whsec_") not in shown and "pw@" not in shown


def test_a_subscriber_url_shown_in_logs_and_metric_labels_hides_credentials_in_its_query_too():
    shown = without_password("https://u:pw@a.example/hook?token=t0k&api_key=k3y&X-Signature=s1g&tenant=acme")
    assert shown == "https://u:***@a.example/hook?token=***&api_key=***&X-Signature=***&tenant=acme"


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("https://a.example/hook", "no `|whsec_…` signing secret"),
        ("https://a.example/hook|sk_test_123", "must start with whsec_"),
        ("https://a.example/hook|whsec_not base64!", "not base64"),
        ("https://a.example/hook|whsec_", "empty"),
        (f"ftp://a.example/hook|{SECRET}", "must be http(s)://host"),
        (f"https://a.example/hook|{SECRET},https://a.example/hook|{OTHER}", "the same URL twice"),
    ],
)
def test_a_malformed_entry_is_refused_naming_it_without_echoing_a_secret(raw, problem):
    with pytest.raises(ValueError, match="ACCESS_WEBHOOK_URLS: entry") as refused:
        parse_webhook_subscribers(raw)
    assert problem in str(refused.value)
    assert "123" not in str(refused.value) and SECRET.removeprefix("whsec_") not in str(refused.value)


def test_serve_and_worker_refuse_to_start_on_a_malformed_entry(monkeypatch):
    started: list[str] = []
    monkeypatch.setattr(run_commands, "_exec", lambda module, arguments: started.append(module))
    environment = {
        "STRIPE_API_KEY": "sk_test_1",
        "STRIPE_WEBHOOK_SECRETS": "whsec_1",
        "DATABASE_URL": "postgresql+psycopg://db/x",
        "ACCESS_WEBHOOK_URLS": "https://a.example/hook|whsec_%%%",
    }
    for command in (["serve"], ["worker"]):
        result = CliRunner().invoke(main, command, env=environment)
        assert result.exit_code == 2
        assert result.stderr.strip().startswith("error: ACCESS_WEBHOOK_URLS: entry 1 (https://a.example/hook)")
    assert started == []


# --- the message and its signature -------------------------------------------------------------------------------


def test_a_grant_is_sent_as_access_granted_with_the_feeds_field_names():
    sources = [{"kind": "entitlement", "id": "ent_1", "detail": "feat_1"}]
    assert message(change("granted", sources)) == {
        "type": "access.granted",
        "timestamp": "2026-11-29T12:00:00+00:00",
        "data": {
            "customer": "cus_1",
            "lookup_key": "api_access",
            "feature": "feat_1",
            "features": ["feat_1"],
            "change": "granted",
            "at": "2026-11-29T12:00:00+00:00",
            "cause": "evt_1",
        },
    }
    assert message(change("revoked"))["type"] == "access.revoked"
    assert message(change("revoked"))["data"]["feature"] is None  # nothing behind it any more


def test_the_feature_comes_from_the_entitlements_or_products_behind_the_decision():
    assert features_of([{"kind": "grant", "id": "7", "detail": "trial"}]) == []
    two = [
        {"kind": "entitlement", "id": "ent_2", "detail": "feat_new"},
        {"kind": "entitlement", "id": "ent_1", "detail": "feat_old"},
        {"kind": "subscription", "id": "sub_1", "detail": "active"},
    ]
    assert features_of(two) == ["feat_new", "feat_old"]  # a lookup key reused after an archive: both, sorted
    assert features_of([{"kind": "product", "id": "prod_1", "detail": "feat_1"}]) == ["feat_1"]


def test_the_signature_verifies_with_the_standard_webhooks_library():
    body = json.dumps(message(change()), separators=(",", ":"))
    now = datetime.now(UTC)  # the library checks the timestamp against its own clock (±5 minutes)
    headers = signed_headers(SECRET, "msg_42", body, now)
    assert Webhook(SECRET).verify(body, headers) == json.loads(body)
    assert headers["webhook-id"] == "msg_42" and headers["webhook-timestamp"] == str(int(now.timestamp()))
    assert headers["webhook-signature"].startswith("v1,")


@pytest.mark.parametrize(
    "tamper",
    [
        lambda body, headers: (body.replace("granted", "revoked"), headers),
        lambda body, headers: (body, {**headers, "webhook-id": "msg_43"}),
        lambda body, headers: (body, {**headers, "webhook-timestamp": str(int(headers["webhook-timestamp"]) + 1)}),
    ],
)
def test_a_changed_body_id_or_timestamp_fails_verification(tamper):
    body = json.dumps(message(change()))
    body, headers = tamper(body, signed_headers(SECRET, "msg_42", body, datetime.now(UTC)))
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body, headers)


def test_another_secret_or_an_old_timestamp_fails_verification():
    body = json.dumps(message(change()))
    with pytest.raises(WebhookVerificationError):
        Webhook(OTHER).verify(body, signed_headers(SECRET, "msg_42", body, datetime.now(UTC)))
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(SECRET).verify(body, signed_headers(SECRET, "msg_42", body, datetime.now(UTC) - timedelta(hours=1)))


# --- the outbox ----------------------------------------------------------------------------------------------------


def outbox(*urls: str) -> Outbox:
    return Outbox([WebhookSubscriber(url, SECRET) for url in urls], RecordingDeliveryQueue())


def written(session: Session) -> list[WebhookDelivery]:
    return [row for row in session.new if isinstance(row, WebhookDelivery)]


def test_each_flip_is_written_once_per_subscriber_with_the_same_body():
    session = Session()  # unbound: nothing is flushed, the test reads what the outbox added
    granted = change("granted")
    outbox("https://a.example/hook", "https://b.example/hook").publish(session, granted)
    rows = written(session)
    assert [(row.subscriber, row.type, row.status, row.attempts) for row in rows] == [
        ("https://a.example/hook", "access.granted", "pending", 0),
        ("https://b.example/hook", "access.granted", "pending", 0),
    ]
    assert rows[0].body == rows[1].body and json.loads(rows[0].body) == message(granted)
    assert all(row.change is granted for row in rows)  # the unit of work fills change_id in at flush


def test_reason_only_updates_and_deployments_without_subscribers_write_nothing():
    session = Session()
    outbox("https://a.example/hook").publish(session, change("updated"))
    outbox().publish(session, change("granted"))
    assert written(session) == []
