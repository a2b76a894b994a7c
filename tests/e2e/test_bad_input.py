"""Scenario 6 of issue 4: bad input gets a clear 4xx, nothing of it is stored, and the service keeps serving
valid events throughout. Over HTTP, against gunicorn, with a valid event after every few bad requests.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from entitlement_sync.models import EventStatus
from entitlement_sync.testing import FakeStripe, active_entitlement, sign, summary_event
from tests.conftest import TEST_DATABASE_URL
from tests.e2e.harness import WEBHOOK_SECRET, Service
from tests.e2e.invariants import Inspector, assert_invariants, record

pytestmark = pytest.mark.e2e

FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    derandomize=True,  # the same examples on every run: a red build can be replayed
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


class Probe:
    """Posts bad requests and checks each answer; posts a valid event every few, which must be accepted."""

    def __init__(self, service: Service, stripe: FakeStripe) -> None:
        self.service = service
        self.stripe = stripe
        self.url = f"{service.url}/webhooks/stripe"
        self.http = requests.Session()
        self.valid_ids: set[str] = set()
        self.customers: list[str] = []
        self.bad_requests = 0
        self.statuses: dict[int, int] = {}

    def bad(self, body: bytes | Any, headers: dict[str, str], reason: str | None = None) -> requests.Response:
        """Post a bad request: expect a 4xx that says what was wrong (`reason`, when given)."""
        response = self.http.post(self.url, data=body, headers={"Content-Type": "application/json", **headers})
        self.bad_requests += 1
        self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1
        assert 400 <= response.status_code < 500, (response.status_code, response.text[:200])
        if reason is not None:
            assert reason in response.json()["error"], response.text[:200]
        if self.bad_requests % 5 == 0:
            self.valid()
        return response

    def valid(self) -> None:
        customer = f"cus_valid_{len(self.customers):04d}"
        self.stripe.set_entitlements(customer, [("feat_api", "api_access")])
        payload = summary_event(customer, self.stripe.active_entitlements(customer))  # what Stripe would send
        response = self.service.deliver(json.dumps(payload).encode())
        assert (response.status_code, response.json()["status"]) == (200, "accepted"), response.text
        self.customers.append(customer)
        self.valid_ids.add(payload["id"])


def signed(body: bytes, *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> dict[str, str]:
    return {"Stripe-Signature": sign(body, secret, timestamp)}


def an_event(**overrides: Any) -> dict[str, Any]:
    payload = summary_event("cus_bad", [active_entitlement("feat_api", "api_access")])
    payload["id"] = "evt_bad_" + payload["id"]
    payload.update(overrides)
    return payload


def test_bad_input_gets_a_clear_4xx_stores_nothing_and_valid_events_keep_flowing(service, simulator):
    service.start_web(workers=2)
    service.start_worker(processes=1, threads=4)
    probe = Probe(service, simulator.stripe)
    started = time.monotonic()
    probe.valid()

    body = json.dumps(an_event()).encode()
    probe.bad(body[:-7], signed(body[:-7]), "not JSON")  # malformed
    probe.bad(b"not json at all", signed(b"not json at all"), "not JSON")
    probe.bad("é".encode("latin-1") * 10, signed("é".encode("latin-1") * 10))  # not UTF-8
    probe.bad(body, {}, "missing Stripe-Signature")  # unsigned
    probe.bad(body, signed(body, secret="whsec_someone_else"), "does not match")
    probe.bad(body, signed(body, timestamp=int(time.time()) - 3600), "too old")  # replayed
    probe.bad(body, signed(body, timestamp=int(time.time()) + 3600), "future")
    probe.bad(body, {"Stripe-Signature": "t=oops,v1=zz"})
    probe.bad(body, {"Stripe-Signature": f"t={int(time.time())}"})
    huge = json.dumps(an_event(padding="x" * (1024 * 1024))).encode()
    probe.bad(huge, signed(huge))  # oversized, with a Content-Length
    assert probe.statuses.get(413) == 1
    probe.bad(iter([huge[:500_000], huge[500_000:]]), signed(huge))  # the same, chunked: no Content-Length
    assert probe.statuses.get(413) == 2
    for not_an_event in ([1, 2], "event", None, {"object": "customer", "id": "cus_1"}, an_event(data={})):
        raw = json.dumps(not_an_event).encode()
        probe.bad(raw, signed(raw), None)
    probe.bad(body, {**signed(body), "X-Padding": "p" * 20_000})  # one huge header
    probe.bad(body, {**signed(body), "Stripe-Signature": signed(body)["Stripe-Signature"] + ",v1=" + "0" * 9000})
    probe.bad(body, {**signed(body), **{f"X-Many-{n}": "x" for n in range(150)}})  # too many headers

    fuzz_bodies(probe)
    fuzz_signature_headers(probe, body)
    fuzz_broken_events(probe)
    probe.valid()

    inspector = Inspector(TEST_DATABASE_URL or "")
    try:
        seconds, snapshot = inspector.wait_for_convergence(simulator.stripe, probe.customers, probe.valid_ids, 60)
        stored = inspector.count(*EventStatus)
    finally:
        inspector.close()
    assert_invariants(snapshot)
    assert stored == len(probe.valid_ids), "a bad request left a row in stripe_events"
    record(
        "6. bad input (hand-made cases + hypothesis)",
        {
            "bad requests": probe.bad_requests,
            "answers to bad requests": dict(sorted(probe.statuses.items())),
            "valid events interleaved": len(probe.valid_ids),
            "events stored": stored,
            "event statuses": dict(snapshot.statuses),
            "seconds to converge after last delivery": round(seconds, 1),
            "seconds in all": round(time.monotonic() - started, 1),
        },
    )


def fuzz_bodies(probe: Probe) -> None:
    """Any bytes, with no signature, a random one or a stale one: always a 4xx."""
    now = int(time.time())
    headers = st.one_of(
        st.just({}),
        st.just(signed(b"another body", timestamp=now)),
        st.integers(301, 10**9).map(lambda age: {"Stripe-Signature": f"t={now - age},v1={'a' * 64}"}),
    )

    @FUZZ
    @given(body=st.binary(max_size=4000), headers=headers)
    def check(body: bytes, headers: dict[str, str]) -> None:
        probe.bad(body, headers)

    check()


def fuzz_signature_headers(probe: Probe, body: bytes) -> None:
    """Random `Stripe-Signature` values over a valid event: a 4xx, never a 500."""
    printable = st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=300)
    shaped = st.builds(
        lambda t, v: f"t={t},v1={v}", st.integers(-(10**12), 10**12), st.text("0123456789abcdef", max_size=80)
    )

    @FUZZ
    @given(value=st.one_of(printable, shaped))
    def check(value: str) -> None:
        probe.bad(body, {"Stripe-Signature": value.strip() or "x"})

    check()


def fuzz_broken_events(probe: Probe) -> None:
    """Validly signed JSON that is not an event: one required field missing or of the wrong kind."""
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
        max_leaves=8,
    )
    not_text = json_values.filter(lambda value: not (isinstance(value, str) and value))
    breakages = st.one_of(
        st.tuples(st.just("id"), not_text | st.just("x" * 300)),
        st.tuples(st.just("type"), not_text | st.just("t" * 101)),
        st.tuples(st.just("created"), json_values.filter(lambda v: not isinstance(v, int) or isinstance(v, bool))),
        st.tuples(st.just("data"), json_values.filter(lambda v: not isinstance(v, dict) or "object" not in v)),
        st.tuples(st.just("object"), json_values.filter(lambda v: v != "event")),
        st.tuples(st.sampled_from(["id", "type", "created", "data"]), st.just(KeyError)),
    )

    @FUZZ
    @given(breakage=breakages)
    def check(breakage: tuple[str, Any]) -> None:
        field, value = breakage
        payload = an_event()
        if value is KeyError:
            del payload[field]
        else:
            payload[field] = value
        raw = json.dumps(payload).encode()
        probe.bad(raw, signed(raw), None)

    check()
