"""The webhook sender: signed and retried as Stripe does, with duplicates and reordering on demand."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from entitlement_sync.stripe_signature import WebhookVerifier
from entitlement_sync.testing import FakeStripe, WebhookSender

SECRET = "whsec_simulator"


class RecordingEndpoint:
    """A webhook endpoint on 127.0.0.1: records what it gets, answers the scripted statuses, then 200."""

    def __init__(self) -> None:
        self.received: list[tuple[dict, str]] = []  # (event, Stripe-Signature header)
        self.bodies: list[bytes] = []
        self.statuses: list[int] = []
        self.always: int | None = None
        self._lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = endpoint._record(body, self.headers["Stripe-Signature"])
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/webhooks/stripe"

    def _record(self, body: bytes, signature: str) -> int:
        with self._lock:
            self.received.append((json.loads(body), signature))
            self.bodies.append(body)
            if self.always is not None:
                return self.always
            return self.statuses.pop(0) if self.statuses else 200

    def ids(self) -> list[str]:
        with self._lock:
            return [event["id"] for event, _ in self.received]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def endpoint():
    endpoint = RecordingEndpoint()
    yield endpoint
    endpoint.stop()


@pytest.fixture
def stripe():
    return FakeStripe()


def sender_for(stripe, endpoint, **knobs):
    knobs.setdefault("base_delay", 0.01)
    return WebhookSender(stripe, endpoint.url, SECRET, **knobs)


def a_story(stripe):
    """Sign-up and cancellation: created, summary, deleted, summary."""
    subscription = stripe.subscribe("cus_1", [stripe.create_product([stripe.create_feature("api_access")])])
    stripe.cancel(subscription)


def test_every_event_is_delivered_once_with_a_signature_our_verifier_accepts(stripe, endpoint):
    with sender_for(stripe, endpoint) as sender:
        a_story(stripe)
        assert sender.drain(10)
    assert sorted(endpoint.ids()) == sorted(event["id"] for event in stripe.events.all())
    verifier = WebhookVerifier((SECRET,))
    for body, (_, signature) in zip(endpoint.bodies, endpoint.received, strict=True):
        verifier.verify(body, signature)  # raises InvalidWebhook on a bad signature
    assert sender.stats.sent == sender.stats.accepted == 4
    assert sender.stats.failures == sender.stats.retries == 0


def test_while_a_secret_is_rolled_each_secret_verifies(stripe, endpoint):
    with WebhookSender(stripe, endpoint.url, ("whsec_old", "whsec_new")) as sender:
        a_story(stripe)
        assert sender.drain(10)
    for body, (_, signature) in zip(endpoint.bodies, endpoint.received, strict=True):
        WebhookVerifier(("whsec_old",)).verify(body, signature)
        WebhookVerifier(("whsec_new",)).verify(body, signature)


def test_a_failing_receiver_gets_the_event_again_until_it_answers_2xx(stripe, endpoint):
    endpoint.statuses = [500, 302]  # a redirect is a failure too
    with sender_for(stripe, endpoint, threads=1) as sender:
        stripe.set_entitlements("cus_1", [("feat_a", "a")])
        assert sender.drain(10)
    [event] = stripe.events.all()
    assert endpoint.ids() == [event["id"]] * 3
    assert (sender.stats.sent, sender.stats.failures, sender.stats.retries, sender.stats.accepted) == (
        3,
        2,
        2,
        1,
    )
    assert stripe.events.search(delivery_success=False) == []


def test_after_max_attempts_the_sender_gives_up_and_the_event_stays_undelivered(stripe, endpoint):
    endpoint.always = 503
    with sender_for(stripe, endpoint, max_attempts=3) as sender:
        stripe.set_entitlements("cus_1", [("feat_a", "a")])
        assert sender.drain(10)
    assert (sender.stats.sent, sender.stats.retries, sender.stats.gave_up) == (3, 2, 1)
    assert len(stripe.events.search(delivery_success=False)) == 1


def test_an_unreachable_receiver_counts_as_failures(stripe, endpoint):
    endpoint.stop()
    with sender_for(stripe, endpoint, max_attempts=2, timeout=1) as sender:
        stripe.set_entitlements("cus_1", [("feat_a", "a")])
        assert sender.drain(10)
    assert (sender.stats.failures, sender.stats.gave_up, sender.stats.accepted) == (2, 1, 0)


def test_a_duplicate_share_of_one_delivers_every_event_twice(stripe, endpoint):
    with sender_for(stripe, endpoint, duplicate_share=1.0) as sender:
        a_story(stripe)
        assert sender.drain(10)
    ids = endpoint.ids()
    assert len(ids) == 8
    assert all(ids.count(event_id) == 2 for event_id in ids)
    assert sender.stats.duplicates_sent == 4


def test_redeliver_sends_one_event_again(stripe, endpoint):
    with sender_for(stripe, endpoint) as sender:
        stripe.set_entitlements("cus_1", [("feat_a", "a")])
        assert sender.drain(10)
        sender.redeliver(stripe.events.all()[0]["id"])
        assert sender.drain(10)
    assert len(endpoint.ids()) == 2
    assert len(set(endpoint.ids())) == 1
    assert sender.stats.duplicates_sent == 1


def test_held_events_can_be_released_newest_first(stripe, endpoint):
    with sender_for(stripe, endpoint, threads=1) as sender:
        sender.hold()
        a_story(stripe)
        assert endpoint.ids() == []
        sender.release(reverse=True)
        assert sender.drain(10)
    assert endpoint.ids() == [event["id"] for event in reversed(stripe.events.all())]


def test_a_reorder_window_shuffles_events_reproducibly(stripe, endpoint):
    orders = []
    for _ in range(2):
        stripe, endpoint = FakeStripe(), RecordingEndpoint()
        with sender_for(stripe, endpoint, threads=1, reorder_window=8, seed=3) as sender:
            for index in range(8):
                stripe.set_entitlements(f"cus_{index}", [("feat_a", "a")])
            assert sender.drain(10)
        recorded = [event["data"]["object"]["customer"] for event in stripe.events.all()]
        delivered = [event["data"]["object"]["customer"] for event, _ in endpoint.received]
        endpoint.stop()
        assert sorted(delivered) == sorted(recorded)
        orders.append(delivered)
    assert orders[0] == orders[1]
    assert orders[0] != sorted(orders[0])


def test_events_recorded_before_start_are_not_sent(stripe, endpoint):
    stripe.set_entitlements("cus_1", [("feat_a", "a")])
    with sender_for(stripe, endpoint) as sender:
        assert sender.drain(10)
    assert endpoint.ids() == []


def test_only_the_endpoints_enabled_event_types_are_sent(stripe, endpoint):
    summary = "entitlements.active_entitlement_summary.updated"
    with sender_for(stripe, endpoint, event_types=[summary]) as sender:
        a_story(stripe)
        assert sender.drain(10)
    assert [event["type"] for event, _ in endpoint.received] == [summary, summary]


def test_a_delay_keeps_events_back_until_it_has_passed(stripe, endpoint):
    with sender_for(stripe, endpoint, delay=60.0) as sender:
        stripe.set_entitlements("cus_1", [("feat_a", "a")])
        assert sender.drain(0.2) is False
    assert endpoint.ids() == []
    assert sender.stats.sent == 0


def test_deliveries_get_through_while_responses_mocks_stripes_api(fake_stripe, endpoint):
    """`fake_stripe` routes every `requests` call to the fake: the deliveries must not be caught."""
    with sender_for(fake_stripe, endpoint) as sender:
        fake_stripe.set_entitlements("cus_1", [("feat_a", "a")])
        assert sender.drain(10)
    assert sender.stats.accepted == 1
    assert len(endpoint.ids()) == 1


def test_held_back_events_and_copies_are_all_delivered_in_the_end(stripe, endpoint):
    with sender_for(stripe, endpoint, threads=1, reorder_window=4, hold_back_share=0.5, duplicate_share=0.5) as sender:
        for index in range(12):
            stripe.set_entitlements(f"cus_{index}", [("feat_a", "a")])
        assert sender.drain(10)
    delivered = endpoint.ids()
    assert set(delivered) == {event["id"] for event in stripe.events.all()}
    assert len(delivered) == 12 + sender.stats.duplicates_sent > 12


def test_throttle_waits_until_few_deliveries_are_left_and_records_each_answer(stripe, endpoint):
    with sender_for(stripe, endpoint, threads=2) as sender:
        for index in range(6):
            stripe.set_entitlements(f"cus_{index}", [("feat_a", "a")])
        assert sender.throttle(0, timeout=10)
        assert sender.stats.accepted == 6
    assert [(record.status, record.answer) for record in sender.deliveries] == [(200, b"")] * 6
    assert all(record.seconds >= 0 for record in sender.deliveries)
