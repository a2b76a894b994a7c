"""`events recover` against Stripe's real payload shapes: stored exactly as the API returned them, streamed page by
page through the Stripe budget, a failing page retried on its own, and a dry run that counts what a run does."""

import json
import time
from datetime import timedelta
from decimal import Decimal
from functools import partial

from entitlement_sync.backfill import Backfiller
from entitlement_sync.events import SUBSCRIPTION_TYPES
from entitlement_sync.models import EventStatus, Subscription, utcnow
from entitlement_sync.pacing import with_retries
from tests.conftest import count_events, post_webhook, settle, stored_event
from tests.real_shapes import subscription_event

EVENTS = "/v1/events"


def stripe_sent(fake_stripe, count, *, now, livemode_every=0):
    """`count` real-shaped subscription events in the simulated account's log (what `GET /v1/events` serves)."""
    types = sorted(SUBSCRIPTION_TYPES)
    sent = []
    for n in range(count):
        body = subscription_event(
            types[n % len(types)],
            f"cus_{n % 40:03d}",
            event_id=f"evt_real_{n:04d}",
            created=now - 3600 + n,
            livemode=bool(livemode_every) and n % livemode_every == 0,  # our key is a test-mode key
        )
        fake_stripe.events.record(body)
        sent.append(body)
    return sent


def as_listed(body):
    """What `GET /v1/events` answers for a recorded event: the simulator adds `pending_webhooks`."""
    return {**body, "pending_webhooks": 1}


def test_the_sdk_turns_decimal_strings_into_decimals_so_only_the_raw_body_is_storable(container, fake_stripe):
    """Why recovery reads the response body: stripe-python 16's objects carry `Decimal`s JSON cannot store."""
    stripe_sent(fake_stripe, 1, now=int(time.time()))
    listing = container.gateway._client.v1.events.list({"limit": 1})
    sdk_item = listing.data[0].to_dict()
    price = sdk_item["data"]["object"]["items"]["data"][0]["price"]
    assert isinstance(price["unit_amount_decimal"], Decimal)
    raw = json.loads(listing.last_response.body)["data"][0]
    assert raw["data"]["object"]["items"]["data"][0]["price"]["unit_amount_decimal"] == "2000"


def test_recovered_real_subscription_events_are_stored_as_stripe_returned_them_and_processed(
    cli, container, worker, fake_stripe, client
):
    now = int(time.time())
    for n in range(40):  # the simulator logs a summary event for each: 40 events
        fake_stripe.set_entitlements(f"cus_{n:03d}", [("feat_api", "api_access")])
    sent = stripe_sent(fake_stripe, 230, now=now, livemode_every=23)  # 10 live-mode events, 2 of them delivered
    delivered = sent[:30]  # delivered by webhook before the endpoint went down
    for body in delivered:
        assert post_webhook(client, body).status_code == 200
    settle(container)

    dry = cli.json("events", "recover", "--since", "2h", "--dry-run")
    assert count_events(container) == 30
    report = cli.json("events", "recover", "--since", "2h")
    counts = ("seen", "pages", "already_in_inbox", "stored", "ignored", "invalid")
    assert [dry[key] for key in counts] == [report[key] for key in counts] == [270, 3, 30, 232, 8, 0]
    settle(container)

    recovered = sent[229]
    stored = stored_event(container, recovered["id"])
    assert stored.status == EventStatus.PROCESSED
    assert stored.payload == as_listed(recovered)  # the JSON of the response, not a re-serialised SDK object
    subscription = stored.payload["data"]["object"]
    assert subscription["items"]["data"][0]["price"]["unit_amount_decimal"] == "2000"
    assert subscription["discounts"][0]["source"]["coupon"]["percent_off"] == 25.5
    assert stored_event(container, sent[0]["id"]).payload == sent[0]  # the delivered one: the same shape
    assert stored_event(container, sent[23]["id"]).status == EventStatus.IGNORED  # a live-mode event
    assert all(container.reader.has_access(f"cus_{n:03d}", "api_access") for n in range(40))
    with container.new_session() as session:
        assert session.get(Subscription, "sub_cus_039").price_ids == ["price_1PgafmB7WZ01zgkW6dKueIc5"]


class CountingPacer:
    def __init__(self):
        self.calls = 0

    def __call__(self):
        self.calls += 1


class FailsOnce:
    """The gateway, except that Stripe answers 503 to the request for page `page` the first time."""

    def __init__(self, source, fake_stripe, page):
        self._source, self._fake_stripe, self._page, self._calls = source, fake_stripe, page, 0

    def list_events_page(self, *args, **kwargs):
        self._calls += 1
        if self._calls == self._page:
            self._fake_stripe.fail_next(503)
        return self._source.list_events_page(*args, **kwargs)


def test_recovery_streams_pages_paces_each_call_and_retries_a_failed_page_not_the_listing(container, fake_stripe):
    stripe_sent(fake_stripe, 250, now=int(time.time()))
    pacer = CountingPacer()
    source = FailsOnce(container.gateway.paced(pacer), fake_stripe, page=2)
    no_sleep = partial(with_retries, sleep=lambda seconds: None)
    backfiller = Backfiller(container.new_session, source, container.receiver, utcnow, no_sleep)
    report = backfiller.recover(utcnow() - timedelta(hours=2))

    listings = fake_stripe.calls_to(EVENTS)
    assert [call.status for call in listings] == [200, 503, 200, 200]
    cursors = [call.query.get("starting_after", [None])[0] for call in listings]
    assert cursors == [None, "evt_real_0150", "evt_real_0150", "evt_real_0050"]  # page 2 again, never page 1
    assert pacer.calls == 4  # every request, the retried one included, took a slot of the Stripe budget
    assert (report.pages, report.seen, report.stored) == (3, 250, 250)
    assert count_events(container) == 250


def test_the_thirty_day_warning_comes_before_any_call_to_stripe(cli, container, fake_stripe):
    fake_stripe.fail_next(401)
    result = cli("events", "recover", "--since", "40d")
    assert result.exit_code == 1
    assert "30 days" in result.stderr and "sync all" in result.stderr
    assert result.stderr.index("30 days") < result.stderr.index("error: StripeRejected")
    assert [call.status for call in fake_stripe.calls_to(EVENTS)] == [401]
