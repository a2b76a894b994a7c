"""What the use cases tell the Telemetry port: webhooks by outcome, processing, freshness, Stripe calls, reads."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import dramatiq
import pytest
import responses
from sqlalchemy import delete

from entitlement_sync.bootstrap import Container, bootstrap
from entitlement_sync.errors import QueueUnavailable, StripeUnavailable
from entitlement_sync.models import Base, utcnow
from entitlement_sync.receive import Receiver
from entitlement_sync.settings import Settings
from entitlement_sync.stripe_gateway import StripeGateway
from entitlement_sync.stripe_signature import WebhookVerifier
from entitlement_sync.testing import FakeStripe, active_entitlement, sign
from entitlement_sync.web import create_app
from tests.conftest import READ_TOKEN, WEBHOOK_SECRET, post_webhook
from tests.fakes import RecordingTelemetry
from tests.fakes import summary_signal as summary_event  # these tests are of the fetch path


@pytest.fixture
def recorder() -> RecordingTelemetry:
    return RecordingTelemetry()


@pytest.fixture
def counted(
    settings: Settings, broker: dramatiq.Broker, fake_stripe: FakeStripe, recorder: RecordingTelemetry
) -> Iterator[Container]:
    """A container whose use cases record into `recorder`; no worker runs, so tests process by hand."""
    container = bootstrap(settings, broker=broker, telemetry=recorder)
    with container.engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(delete(table))
    yield container
    container.close()


def a_summary(customer: str = "cus_1") -> dict[str, Any]:
    return summary_event(customer, [active_entitlement("feat_api", "api_access")])


def test_each_webhook_outcome_is_counted_with_its_type_and_reason(counted, recorder):
    client = create_app(counted).test_client()
    event = a_summary()
    post_webhook(client, event)
    post_webhook(client, event)
    post_webhook(client, {**a_summary(), "id": "evt_other", "type": "payment_intent.created"})
    post_webhook(client, a_summary(), secret="whsec_wrong")
    post_webhook(client, b"{not json")
    assert recorder.named("webhook_answered") == [
        ("entitlements.active_entitlement_summary.updated", "accepted", ""),
        ("entitlements.active_entitlement_summary.updated", "duplicate", ""),
        ("payment_intent.created", "ignored", "unhandled_type"),
        ("unknown", "rejected", "signature_mismatch"),
        ("unknown", "rejected", "not_an_event"),
    ]


def test_processing_reports_outcome_freshness_sync_and_access_changes(counted, recorder, fake_stripe):
    fake_stripe.set_entitlements("cus_1", [("feat_api", "api_access")])
    client = create_app(counted).test_client()
    first, second = a_summary(), a_summary()
    post_webhook(client, first)
    post_webhook(client, second)

    counted.syncer.process_event(first["id"])
    counted.syncer.process_event(second["id"])  # stored before the first's fetch began: no call needed

    assert recorder.named("event_finished") == [
        ("entitlements.active_entitlement_summary.updated", "processed"),
        ("entitlements.active_entitlement_summary.updated", "processed"),
    ]
    assert recorder.named("customer_synced") == [("applied",)]
    assert recorder.named("event_coalesced") == [()]
    assert recorder.named("access_changed") == [(1, 0)]
    assert recorder.named("stripe_called") == [("active_entitlements", "200", None)]
    freshness = recorder.named("change_applied")
    assert len(freshness) == 2
    assert all(since_created >= since_received >= 0 for since_created, since_received in freshness)


def test_a_retried_a_waiting_and_a_failed_event_are_told_apart(counted, recorder, fake_stripe):
    client = create_app(counted).test_client()
    event, refused = a_summary(), a_summary()
    post_webhook(client, event)
    post_webhook(client, refused)
    fake_stripe.fail_next(429, times=2)
    with pytest.raises(StripeUnavailable, match="429"):
        counted.syncer.process_event(event["id"], final_attempt=False)
    counted.syncer.process_event(event["id"], final_attempt=True)  # Stripe unavailable: waits for the sweep
    assert recorder.named("stripe_called") == [("active_entitlements", "429", "global-rate")] * 2
    fake_stripe.fail_next(401)
    counted.syncer.process_event(refused["id"], final_attempt=False)  # needs a person: failed at once
    outcomes = [outcome for _, outcome in recorder.named("event_finished")]
    assert outcomes == ["retrying", "waiting", "failed"]


class RefusingQueue:
    def enqueue_event(self, event_id: str) -> None:
        raise QueueUnavailable("broker down")

    def enqueue_events(self, event_ids: Sequence[str], customers: Mapping[str, str | None] | None = None) -> None:
        for event_id in event_ids:
            self.enqueue_event(event_id)

    def ping(self) -> None:
        raise QueueUnavailable("broker down")


def test_a_refused_enqueue_is_counted(counted, recorder):
    verifier = WebhookVerifier((WEBHOOK_SECRET,))
    receiver = Receiver(counted.new_session, verifier, RefusingQueue(), utcnow, False, telemetry=recorder)
    body = json.dumps(a_summary()).encode()
    assert receiver.accept_webhook(body, sign(body, WEBHOOK_SECRET)).queued is False
    assert recorder.named("enqueue_failed") == [("receiver",)]


def test_read_api_answers_are_timed_by_endpoint_and_status(counted, recorder):
    client = create_app(counted).test_client()
    client.get("/v1/customers/cus_1/entitlements", headers={"Authorization": f"Bearer {READ_TOKEN}"})
    client.get("/v1/customers/cus_1/entitlements/api_access")
    assert recorder.named("read_answered") == [
        ("access.customer_entitlements", 200),
        ("access.customer_entitlement", 401),
    ]


def test_the_gateway_reports_rate_limit_reasons_and_pacer_waits():
    recorder = RecordingTelemetry()
    gateway = StripeGateway("sk_test_x", "https://api.stripe.com", 2, telemetry=recorder).paced(lambda: None)
    with responses.RequestsMock() as mock:
        url = "https://api.stripe.com/v1/entitlements/active_entitlements"
        error = {"error": {"type": "invalid_request_error", "message": "Too many requests"}}
        mock.get(url, status=429, json=error, headers={"Stripe-Rate-Limited-Reason": "endpoint-concurrency"})
        with pytest.raises(StripeUnavailable, match="429"):
            gateway.list_active_entitlements("cus_1")
    assert recorder.named("stripe_called") == [("active_entitlements", "429", "endpoint-concurrency")]
    assert recorder.named("pacer_waited") == [()]
