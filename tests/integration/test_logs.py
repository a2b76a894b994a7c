"""Log lines: JSON in production, readable in dev; the event id, customer and outcome on every line about an
event; never a secret, a signature or a payload."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
import structlog

from entitlement_sync.logs import configure_logging
from entitlement_sync.testing import active_entitlement
from tests.conftest import API_KEY, READ_TOKEN, WEBHOOK_SECRET, post_webhook
from tests.fakes import summary_signal as summary_event  # these tests are of the fetch path


@pytest.fixture
def lines() -> Any:
    stream = io.StringIO()
    configure_logging(json=True, stream=stream)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    structlog.reset_defaults()


def test_every_line_about_an_event_names_it_its_customer_and_its_outcome(client, container, fake_stripe, lines):
    fake_stripe.set_entitlements("cus_log", [("feat_api", "api_access")])
    event = summary_event("cus_log", [active_entitlement("feat_api", "api_access")])
    post_webhook(client, event)
    post_webhook(client, event)
    container.syncer.process_event(event["id"])

    about = [line for line in lines() if line.get("event_id") == event["id"]]
    # On PostgreSQL the webhooks a writer stored and enqueued together share one line, naming each of them.
    batches = [line for line in lines() if event["id"] in line.get("event_ids", [])]
    accepted = about + batches if container.receiver.grouped_writes else about
    assert [line["event"] for line in accepted if line["event"].endswith(".accepted")] == (
        ["webhooks.accepted"] if container.receiver.grouped_writes else ["webhook.accepted"]
    )
    assert {line["event"] for line in about} >= {"webhook.duplicate", "event.finished"}
    assert all(line["customer"] == "cus_log" for line in about)
    assert all(line["customers"] == ["cus_log"] and line["outcome"] == "accepted" for line in batches)
    outcomes = {line["event"]: line.get("outcome") for line in accepted}
    assert outcomes.get("webhook.accepted", outcomes.get("webhooks.accepted")) == "accepted"
    assert outcomes["webhook.duplicate"] == "duplicate"
    assert outcomes["event.finished"] == "processed"
    assert [line["event_id"] for line in lines() if line["event"] == "access.changed"] == [event["id"]]


def test_no_line_carries_a_secret_a_signature_or_a_payload(client, container, fake_stripe, lines):
    event = summary_event("cus_secret", [active_entitlement("feat_api", "api_access")])
    body = json.dumps(event).encode()
    forged = "t=1,v1=" + "ab" * 32
    post_webhook(client, body, **{"Stripe-Signature": forged})
    response = post_webhook(client, body)
    client.get("/v1/customers/cus_secret/entitlements", headers={"Authorization": f"Bearer {READ_TOKEN}"})
    container.syncer.process_event(event["id"])

    assert response.status_code == 200
    written = json.dumps(lines())
    for secret in (WEBHOOK_SECRET, API_KEY, READ_TOKEN, forged, "ab" * 32):
        assert secret not in written
    assert 'active_entitlement_summary"' not in written  # the payload's data.object is never logged
    assert all("payload" not in line and "data" not in line for line in lines())


def test_dev_lines_are_readable_not_json(container):
    stream = io.StringIO()
    configure_logging(json=False, stream=stream)
    try:
        structlog.get_logger("test").info("webhook.accepted", event_id="evt_1", customer="cus_1")
    finally:
        structlog.reset_defaults()
    text = stream.getvalue()
    assert "webhook.accepted" in text and "event_id" in text and "evt_1" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.splitlines()[0])
