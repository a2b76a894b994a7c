"""The receiver: verify, store, answer. Through Flask's test client, against the configured database."""

import io
import json
import time
from dataclasses import replace
from datetime import timedelta

import pytest
from werkzeug.test import EnvironBuilder, run_wsgi_app

from entitlement_sync.bootstrap import bootstrap
from entitlement_sync.errors import QueueUnavailable
from entitlement_sync.models import EventStatus, utcnow
from entitlement_sync.ports import StuckRule
from entitlement_sync.sweep import Sweeper
from entitlement_sync.tasks import build_redis_broker
from entitlement_sync.testing import active_entitlement, sign
from entitlement_sync.web import create_app
from tests.conftest import WEBHOOK_SECRET, count_events, post_webhook, settle, stored_event
from tests.fakes import BrokerDown
from tests.fakes import summary_signal as summary_event  # these tests are of the fetch path


def a_summary(customer="cus_1", **fields):
    return summary_event(customer, [active_entitlement("feat_api", "api_access")], **fields)


def test_a_valid_event_is_stored_queued_and_answered_accepted(client, container):
    event = a_summary()
    response = post_webhook(client, event)
    assert response.status_code == 200
    assert response.json == {"status": "accepted", "event": event["id"]}
    stored = stored_event(container, event["id"])
    assert stored.status == EventStatus.QUEUED
    assert stored.customer_id == "cus_1"
    assert stored.payload == event


def test_each_signature_failure_is_a_400_with_a_reason_and_stores_nothing(client, container):
    body = json.dumps(a_summary()).encode()
    now = int(time.time())
    cases = {
        "missing Stripe-Signature header": {"Stripe-Signature": ""},
        "malformed Stripe-Signature header": {"Stripe-Signature": "t=now,v1"},
        "signature does not match": {"Stripe-Signature": sign(body, "whsec_wrong")},
        "signature timestamp too old": {"Stripe-Signature": sign(body, WEBHOOK_SECRET, now - 600)},
        "signature timestamp is in the future": {"Stripe-Signature": sign(body, WEBHOOK_SECRET, now + 600)},
    }
    for expected_reason, headers in cases.items():
        response = post_webhook(client, body, **headers)
        assert (response.status_code, response.json) == (400, {"error": expected_reason})
    assert count_events(container) == 0


def test_a_validly_signed_body_that_is_not_json_is_a_400(client, container):
    response = post_webhook(client, b"{not json")
    assert (response.status_code, response.json["error"]) == (400, "body is not JSON")
    assert count_events(container) == 0


def test_a_body_over_one_mebibyte_is_a_413(client, container):
    body = json.dumps({**a_summary(), "padding": "x" * (1024 * 1024)}).encode()
    response = post_webhook(client, body)
    assert response.status_code == 413
    assert count_events(container) == 0


def test_rolled_secrets_accept_events_signed_with_either(client, container, settings, broker):
    rolled = bootstrap(replace(settings, webhook_secrets=("whsec_next", WEBHOOK_SECRET)), broker=broker)
    rolled_client = create_app(rolled).test_client()
    assert post_webhook(rolled_client, a_summary(), secret="whsec_next").json["status"] == "accepted"
    assert post_webhook(rolled_client, a_summary(), secret=WEBHOOK_SECRET).json["status"] == "accepted"
    rolled.close()


def test_an_unhandled_type_is_answered_2xx_and_ignored(client, container, fake_stripe):
    event = {**a_summary(), "type": "invoice.paid"}
    response = post_webhook(client, event)
    assert response.status_code == 200
    assert response.json["status"] == "ignored"
    assert response.json["reason"] == "event type invoice.paid is not handled"
    assert stored_event(container, event["id"]).status == EventStatus.IGNORED
    assert fake_stripe.calls == []


def test_an_event_of_the_other_mode_is_answered_2xx_and_ignored(client, container):
    response = post_webhook(client, a_summary(livemode=True))
    assert response.status_code == 200
    assert response.json["status"] == "ignored"
    assert "live-mode event" in response.json["reason"]


def test_a_duplicate_delivery_is_answered_duplicate_and_processed_once(client, container, worker, fake_stripe):
    fake_stripe.set_entitlements("cus_1", [("feat_api", "api_access")])
    event = a_summary()
    assert post_webhook(client, event).json["status"] == "accepted"
    settle(container)
    assert post_webhook(client, event).json == {"status": "duplicate", "event": event["id"]}
    settle(container)
    stored = stored_event(container, event["id"])
    assert (stored.status, stored.attempts) == (EventStatus.PROCESSED, 1)
    assert len(fake_stripe.calls_to("/v1/entitlements/active_entitlements")) == 1


def test_database_down_is_a_503_so_that_stripe_retries(settings, broker, tmp_path):
    down_url = (
        "postgresql+psycopg://postgres@127.0.0.1:1/test"
        if settings.database_url.startswith("postgresql")
        else f"sqlite:///{tmp_path}/no/such/dir/db.sqlite"
    )
    down = bootstrap(replace(settings, database_url=down_url), broker=broker)
    response = post_webhook(create_app(down).test_client(), a_summary())
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "30"
    down.close()


def test_broker_down_still_answers_2xx_and_the_event_is_processed_later(settings, container, worker, fake_stripe):
    fake_stripe.set_entitlements("cus_1", [("feat_api", "api_access")])
    unreachable = replace(settings, redis_url="redis://127.0.0.1:1/0")
    receiving = bootstrap(unreachable, broker=build_redis_broker(unreachable))
    event = a_summary()
    response = post_webhook(create_app(receiving).test_client(), event)
    assert (response.status_code, response.json["status"]) == (200, "accepted")
    assert stored_event(container, event["id"]).status == EventStatus.RECEIVED
    receiving.close()

    a_minute_later = Sweeper(
        container.new_session,
        container.queue,
        lambda: utcnow() + timedelta(minutes=1),
        StuckRule(received_grace=timedelta(seconds=10), stuck_after=timedelta(minutes=15)),
    )
    assert a_minute_later.requeue_unfinished() == 1
    settle(container)
    assert stored_event(container, event["id"]).status == EventStatus.PROCESSED
    assert container.reader.has_access("cus_1", "api_access")


def test_health_and_readiness(client):
    assert client.get("/healthz").json == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json["checks"] == {"database": "ok", "broker": "ok"}


def test_readiness_is_a_503_that_says_the_broker_does_not_answer(container):
    down = replace(container, queue=BrokerDown("ConnectionError: Connection refused"))
    response = create_app(down).test_client().get("/readyz")
    assert response.status_code == 503
    # Which dependency, never what it said: error texts can carry hosts and users.
    assert response.json == {"status": "not ready", "checks": {"database": "ok", "broker": "unavailable"}}


def test_a_redis_broker_refusing_connections_is_reported_as_unavailable(settings):
    unreachable = replace(settings, redis_url="redis://127.0.0.1:1/0")
    down = bootstrap(unreachable, broker=build_redis_broker(unreachable))
    with pytest.raises(QueueUnavailable, match="Connection"):  # what /readyz then reports
        down.queue.ping()
    down.close()


def test_metrics_report_the_inbox_by_status_and_the_age_of_the_oldest_unfinished_event(client, container):
    post_webhook(client, a_summary())
    post_webhook(client, {**a_summary(), "type": "invoice.paid"})
    text = client.get("/metrics").get_data(as_text=True)
    assert 'entitlement_sync_events{status="queued"} 1.0' in text
    assert 'entitlement_sync_events{status="ignored"} 1.0' in text
    assert 'entitlement_sync_events{status="failed"} 0.0' in text
    age_line = next(line for line in text.splitlines() if line.startswith("entitlement_sync_oldest_unfinished"))
    assert float(age_line.split()[-1]) > 0.0  # the queued event is waiting


def test_a_chunked_body_over_one_mebibyte_is_a_413_too(client, container):
    body = json.dumps({**a_summary(), "padding": "x" * (1024 * 1024)}).encode()
    environ = EnvironBuilder(
        path="/webhooks/stripe",
        method="POST",
        headers={"Stripe-Signature": sign(body, WEBHOOK_SECRET), "Transfer-Encoding": "chunked"},
    ).get_environ()
    # As gunicorn hands a chunked upload to the app: no Content-Length, a terminated input stream.
    environ.pop("CONTENT_LENGTH", None)
    environ.update({"wsgi.input": io.BytesIO(body), "wsgi.input_terminated": True})
    _, status, _ = run_wsgi_app(client.application, environ, buffered=True)
    assert status.startswith("413")
    assert count_events(container) == 0


def test_the_plain_wsgi_route_answers_as_the_flask_view_would(container):
    """create_app answers POST /webhooks/stripe in plain WSGI; the blueprint's view alone must say the same."""
    from flask import Flask

    from entitlement_sync.web.webhooks import webhooks

    view_only = Flask("view_only")
    view_only.config["MAX_CONTENT_LENGTH"] = 1024 * 1024
    view_only.extensions["entitlement_sync"] = container
    view_only.register_blueprint(webhooks)
    plain, flask_view = create_app(container).test_client(), view_only.test_client()
    assert create_app(container).wsgi_app.__class__.__name__ == "WebhookRoute"

    answers = []
    for client in (plain, flask_view):
        accepted, ignored = a_summary("cus_1"), a_summary("cus_3", livemode=True)
        answers.append(
            [
                (response.status_code, response.json, response.headers.get("Content-Type"))
                for response in (
                    post_webhook(client, accepted),
                    post_webhook(client, ignored),
                    post_webhook(client, a_summary(), secret="whsec_wrong"),
                    client.post("/webhooks/stripe", data=b"x" * (1024 * 1024 + 1)),
                )
            ]
        )
        assert answers[-1][0][1] == {"status": "accepted", "event": accepted["id"]}
        assert answers[-1][1][1]["event"] == ignored["id"]
    plain_answers, view_answers = answers
    plain_answers[0][1]["event"] = plain_answers[1][1]["event"] = view_answers[0][1]["event"]  # different events
    view_answers[1][1]["event"] = view_answers[0][1]["event"]
    assert plain_answers[:3] == view_answers[:3]  # (the view alone has no JSON error pages: create_app adds them)
    assert [answer[0] for answer in plain_answers] == [answer[0] for answer in view_answers] == [200, 200, 400, 413]
    assert plain_answers[3][1] == {"error": "body over 1048576 bytes"}
    assert plain_answers[1][1]["status"] == "ignored" and "live-mode" in plain_answers[1][1]["reason"]
    assert plain.get("/webhooks/stripe").status_code == 405
