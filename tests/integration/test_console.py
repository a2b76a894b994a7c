"""The ops console over Flask's test client: who may see it, CSRF on every POST, and what each page says.
The browser tests (test_console_browser.py) drive the same pages through headless Chromium."""

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask

from entitlement_sync.events import event_from_payload
from entitlement_sync.models import EventStatus
from entitlement_sync.testing import active_entitlement
from entitlement_sync.web import console, create_app
from entitlement_sync.web.access import access
from entitlement_sync.web.webhooks import webhooks
from tests.conftest import settle, stored_event
from tests.fakes import summary_signal as summary_event  # these tests are of the fetch path
from tests.integration.console_support import CONSOLE_TOKEN, csrf_of, log_in, post_form, subscribe_with_catalog

PAGES = [
    "/console/",
    "/console/events",
    "/console/events?status=failed",
    "/console/events/evt_1",
    "/console/customers",
    "/console/customers/cus_1",
]
FORMS = [
    "/console/events/evt_1/replay",
    "/console/events/replay-failed",
    "/console/customers/cus_1/sync",
    "/console/logout",
]


@pytest.fixture
def settings(settings):
    return replace(settings, ops_console_token=CONSOLE_TOKEN)


@pytest.fixture
def failed_event(container, worker, fake_stripe) -> str:
    fake_stripe.fail_next(401)
    payload = summary_event("cus_1", [active_entitlement("feat_api", "api_access")], event_id="evt_1")
    container.receiver.accept_event(event_from_payload(payload))
    settle(container)
    assert stored_event(container, "evt_1").status == EventStatus.FAILED
    return "evt_1"


def test_the_console_is_off_without_a_token(container):
    client = create_app(replace_token(container, "")).test_client()
    for path in ["/console/", "/console/login", "/console/events"]:
        assert client.get(path).status_code == 404


def replace_token(container: Any, token: str) -> Any:
    container.settings = replace(container.settings, ops_console_token=token)
    return container


def test_nothing_under_the_console_loads_without_logging_in(client, failed_event):
    for path in PAGES:
        answer = client.get(path)
        assert answer.status_code == 302, path
        assert answer.headers["Location"].startswith("/console/login?next=")
        assert not {"Simulated", "api_access", "Throughput", "Attempts"} & set(answer.get_data(as_text=True).split())
    csrf = csrf_of(client.get("/console/login").get_data(as_text=True))  # a session, but not a logged-in one
    for path in FORMS[:-1]:
        assert client.post(path, data={"csrf": csrf}).status_code == 401, path
        assert client.post(path).status_code == 400, path
    assert stored_event(client.application.extensions["entitlement_sync"], "evt_1").status == EventStatus.FAILED


def test_a_wrong_token_is_refused_and_the_right_one_opens_a_signed_session(client):
    refused = log_in(client, "not-the-token")
    assert refused.status_code == 401 and "not the console" in refused.get_data(as_text=True)
    assert client.get("/console/").status_code == 302
    accepted = log_in(client)
    assert accepted.status_code == 302 and accepted.headers["Location"] == "/console/"
    cookie = accepted.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "Path=/console" in cookie and "SameSite=Lax" in cookie
    assert CONSOLE_TOKEN not in cookie
    page = client.get("/console/")
    assert page.status_code == 200 and "Overview" in page.get_data(as_text=True)
    assert "script-src" not in page.headers["Content-Security-Policy"]  # default-src 'none': no script at all
    assert page.headers["Cache-Control"] == "no-store" and page.headers["X-Frame-Options"] == "DENY"


def test_a_new_token_ends_every_session(client, container):
    log_in(client)
    assert client.get("/console/").status_code == 200
    replace_token(container, "the-rotated-token")
    assert client.get("/console/").status_code == 302


def test_after_login_the_console_goes_where_it_was_asked_but_never_elsewhere(client):
    def after_login(client: Any, target: str) -> str:
        fresh = client.application.test_client()
        csrf = csrf_of(fresh.get("/console/login").get_data(as_text=True))
        answer = fresh.post("/console/login", data={"token": CONSOLE_TOKEN, "csrf": csrf, "next": target})
        return str(answer.headers["Location"])

    assert after_login(client, "/console/events?status=failed") == "/console/events?status=failed"
    for target in ["https://evil.example/", "//evil.example/console", "/elsewhere", "/console\\@evil"]:
        assert after_login(client, target) == "/console/"


def test_a_post_without_the_sessions_csrf_token_is_refused(client, failed_event):
    log_in(client)
    assert client.post(f"/console/events/{failed_event}/replay").status_code == 400
    assert client.post(f"/console/events/{failed_event}/replay", data={"csrf": "forged"}).status_code == 400
    container = client.application.extensions["entitlement_sync"]
    assert stored_event(container, failed_event).status == EventStatus.FAILED
    other = create_app(container).test_client()  # another browser's session: its token is not this one's
    log_in(other)
    stolen = csrf_of(other.get("/console/").get_data(as_text=True))
    assert client.post(f"/console/events/{failed_event}/replay", data={"csrf": stolen}).status_code == 400


def test_the_console_is_mounted_only_where_the_read_api_is(container):
    public = Flask("public")  # the public surface of the port split: webhooks and health, no read API
    public.extensions["entitlement_sync"] = container
    public.register_blueprint(webhooks)
    console.install(public)
    assert "console" not in public.blueprints
    internal = Flask("internal")
    internal.extensions["entitlement_sync"] = container
    internal.register_blueprint(access)
    console.install(internal)
    assert "console" in internal.blueprints


def test_an_event_page_shows_its_payload_escaped_and_every_attempt(client, failed_event, container):
    hostile = summary_event("cus_2", [], event_id="evt_hostile")
    hostile["data"]["object"]["note"] = "<script>alert('x')</script>"
    container.receiver.accept_event(event_from_payload(hostile))
    log_in(client)
    page = client.get("/console/events/evt_hostile").get_data(as_text=True)
    assert "&lt;script&gt;alert(" in page and "<script>alert" not in page
    failed = client.get(f"/console/events/{failed_event}").get_data(as_text=True)
    assert "HTTP 401" in failed and 'id="attempts"' in failed


def test_the_events_page_filters_by_status_type_customer_and_time(client, failed_event, container):
    container.receiver.accept_event(event_from_payload(summary_event("cus_2", [], event_id="evt_2")))
    log_in(client)

    def listed(query: str) -> set[str]:
        page = client.get(f"/console/events?{query}").get_data(as_text=True)
        return {event_id for event_id in ("evt_1", "evt_2") if f">{event_id}</a>" in page}

    assert listed("") == {"evt_1", "evt_2"}
    assert listed("status=failed") == {"evt_1"}
    assert listed("customer=cus_2") == {"evt_2"}
    assert listed("type=entitlements.active_entitlement_summary.updated&since=1h") == {"evt_1", "evt_2"}
    assert listed("since=2000-01-01T00:00") == {"evt_1", "evt_2"}
    assert listed("since=2999-01-01") == set()
    assert len(listed("limit=1")) == 1 and listed("limit=-5") == listed("limit=1")
    assert client.get("/console/events?status=lost").status_code == 400
    assert client.get("/console/events?since=yesterday").status_code == 400


def test_replaying_a_failed_event_from_the_console_processes_it(client, failed_event, container, fake_stripe):
    fake_stripe.set_entitlements("cus_1", [("feat_api", "api_access")])
    log_in(client)
    answer = post_form(client, f"/console/events/{failed_event}/replay", f"/console/events/{failed_event}")
    assert answer.status_code == 302
    settle(container)
    assert stored_event(container, failed_event).status == EventStatus.PROCESSED
    assert "Replaying 1 event" in client.get(answer.headers["Location"]).get_data(as_text=True)


def test_replay_all_failed_goes_through_the_same_use_case_as_the_cli(client, failed_event, container, fake_stripe):
    fake_stripe.set_entitlements("cus_1", [("feat_api", "api_access")])
    log_in(client)
    answer = post_form(client, "/console/events/replay-failed", "/console/events")
    settle(container)
    assert stored_event(container, failed_event).status == EventStatus.PROCESSED
    assert answer.headers["Location"] == "/console/events?status=failed"
    again = post_form(client, "/console/events/replay-failed", "/console/events")
    assert "No failed events" in client.get(again.headers["Location"]).get_data(as_text=True)


def test_the_overview_counts_the_last_hour(client, failed_event, container):
    container.receiver.accept_event(event_from_payload(summary_event("cus_2", [], event_id="evt_2")))
    settle(container)
    report = container.overview.last_hour()
    assert (report.received, report.processed, report.failed_in_window) == (2, 1, 1)
    assert report.by_status == {"failed": 1, "processed": 1} and report.backlog == 0
    assert report.freshness.samples == 1 and report.freshness.arrival_p99 is not None
    assert sum(minute.attempts for minute in report.minutes) == 2 and len(report.minutes) == 60
    log_in(client)
    page = client.get("/console/").get_data(as_text=True)
    assert '<svg class="chart"' in page and "<polyline" in page and "evt_1" in page


def test_the_customer_page_says_why_and_syncs_now(client, container, worker, fake_stripe):
    story = subscribe_with_catalog(container, fake_stripe)
    settle(container)
    page = container.customers.page(story.customer)
    assert {(line.lookup_key, line.reason) for line in page.access} == {
        ("api_access", "stripe_entitlement"),
        ("reports", "stripe_entitlement"),
    }
    assert all(story.subscription in line.sources and story.product in line.sources for line in page.access)
    assert [sub.id for sub in page.subscriptions] == [story.subscription] and page.grants == []
    assert {change.lookup_key for change in page.history} == {"api_access", "reports"}

    log_in(client)
    html = client.get(f"/console/customers/{story.customer}").get_data(as_text=True)
    assert "API access" in html and story.subscription in html
    until = container.syncer._clock() + timedelta(days=1)
    container.overrides.grant(story.customer, "sso", until, "pilot for the security review", "ana")
    html = client.get(f"/console/customers/{story.customer}").get_data(as_text=True)
    assert "pilot for the security review" in html and "manual_grant" in html

    fake_stripe.set_entitlements(story.customer, [("feat_api", "api_access")])  # reports taken away in Stripe
    answer = post_form(client, f"/console/customers/{story.customer}/sync", f"/console/customers/{story.customer}")
    assert "revoked reports" in client.get(answer.headers["Location"]).get_data(as_text=True)
    assert {line.lookup_key for line in container.customers.page(story.customer).access} == {
        "api_access",
        "sso",
    }  # sso: the grant


def test_a_customer_search_opens_the_customer(client):
    log_in(client)
    answer = client.get("/console/customers?customer=cus_42")
    assert answer.headers["Location"] == "/console/customers/cus_42"
    assert "never" in client.get("/console/customers/cus_42").get_data(as_text=True)
