"""Test doubles. Stripe's HTTP API is faked with `responses` in front of the simulator's FakeStripe; time is
faked with `VirtualTime`, so nothing waits for real and what the pacer hands out is exact."""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import responses

from entitlement_sync.effective import AccessPolicy
from entitlement_sync.errors import QueueUnavailable
from entitlement_sync.ports import ActiveEntitlement, EntitlementsRead
from entitlement_sync.sync import Syncer
from entitlement_sync.testing import FakeStripe, summary_event

STRIPE_API = re.compile(r"https://api\.stripe\.com/.*")
ACTIVE_ENTITLEMENTS = "/v1/entitlements/active_entitlements"
LOCAL_HTTP = re.compile(r"http://127\.0\.0\.1:\d+/")


@contextmanager
def stripe_over_responses(fake: FakeStripe) -> Iterator[responses.RequestsMock]:
    """Route every call to api.stripe.com through `fake.handle(method, path, query, headers)`, as
    stripe-python's requests would go."""

    def answer(request):  # type: ignore[no-untyped-def]
        url = urlsplit(request.url)
        status, headers, body = fake.handle(request.method, url.path, parse_qs(url.query), dict(request.headers))
        return status, {"Content-Type": "application/json", **headers}, json.dumps(body)

    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        for method in (responses.GET, responses.POST, responses.DELETE):
            mock.add_callback(method, STRIPE_API, callback=answer)
        mock.add_passthru(LOCAL_HTTP)  # local HTTP servers of the test itself (a webhook subscriber)
        yield mock


class BrokerDown:
    """A JobQueue whose broker does not answer: every call raises QueueUnavailable with `reason`."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def enqueue_event(self, event_id: str) -> None:
        raise QueueUnavailable(self.reason)

    def enqueue_events(self, event_ids: Sequence[str], customers: Mapping[str, str | None] | None = None) -> None:
        for event_id in event_ids:
            self.enqueue_event(event_id)

    def ping(self) -> None:
        raise QueueUnavailable(self.reason)


class GatedSource:
    """An EntitlementSource whose answers wait for the test to open a gate: to stage races deterministically."""

    def __init__(self) -> None:
        self._answers: list[tuple[threading.Event, threading.Event, list[ActiveEntitlement]]] = []
        self._lock = threading.Lock()

    def will_answer(self, entitlements: list[ActiveEntitlement]) -> tuple[threading.Event, threading.Event]:
        """Queue an answer; returns (started, gate): `started` is set when the fetch begins, `gate` releases it."""
        started, gate = threading.Event(), threading.Event()
        with self._lock:
            self._answers.append((started, gate, entitlements))
        return started, gate

    def read_active_entitlements(self, customer_id: str) -> EntitlementsRead:
        with self._lock:
            started, gate, answer = self._answers.pop(0)
        started.set()
        assert gate.wait(10), "the test never opened the gate"
        return EntitlementsRead(answer)


class VirtualTime:
    """A clock and a sleep for the pacer and the retries, on which only sleeping moves time: work takes none,
    so every moment is exact whatever the machine's load. Each thread has its own timeline (threads sleep
    side by side); `FakeStripe.clock = virtual_time.now` stamps each request with its caller's moment."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._start = start
        self._local = threading.local()
        self._lock = threading.Lock()
        self.slept: list[float] = []

    def now(self) -> float:
        return float(getattr(self._local, "now", self._start))

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.slept.append(seconds)
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        """Let time pass in this thread without sleeping (a quiet spell)."""
        self._local.now = self.now() + max(seconds, 0.0)


def paced_moments(pacer: Callable[[], None], virtual_time: VirtualTime, count: int) -> list[float]:
    """The moments at which `count` requests, one after another, would leave through `pacer`."""
    moments = []
    for _ in range(count):
        pacer()
        moments.append(virtual_time.now())
    return moments


def busiest_second(moments: Iterable[float], seconds: float = 1.0) -> int:
    """The most moments within any sliding window [t, t + seconds), one second unless told."""
    ordered = sorted(moments)
    most, start = 0, 0
    for end, moment in enumerate(ordered):
        while moment - ordered[start] >= seconds:
            start += 1
        most = max(most, end - start + 1)
    return most


def entitlement_calls_per_customer(fake: FakeStripe) -> Counter[str]:
    """How many times each customer's active entitlements were fetched (pages included)."""
    return Counter(call.query["customer"][0] for call in fake.calls_to(ACTIVE_ENTITLEMENTS))


class RecordingTelemetry:
    """The Telemetry port, remembering every call as (method, arguments) for tests to read."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def named(self, method: str) -> list[tuple[Any, ...]]:
        return [arguments for name, arguments in self.calls if name == method]

    def _record(self, method: str, *arguments: Any) -> None:
        self.calls.append((method, arguments))

    def webhook_answered(self, event_type: str, outcome: str, reason: str, seconds: float) -> None:
        self._record("webhook_answered", event_type, outcome, reason)

    def enqueue_failed(self, source: str) -> None:
        self._record("enqueue_failed", source)

    def breaker_changed(self, state: str) -> None:
        self._record("breaker_changed", state)

    def event_finished(self, event_type: str, outcome: str) -> None:
        self._record("event_finished", event_type, outcome)

    def change_applied(self, since_created: float, since_received: float) -> None:
        self._record("change_applied", since_created, since_received)

    def customer_synced(self, result: str, seconds: float) -> None:
        self._record("customer_synced", result)

    def event_coalesced(self) -> None:
        self._record("event_coalesced")

    def access_changed(self, granted: int, revoked: int) -> None:
        self._record("access_changed", granted, revoked)

    def stripe_called(self, endpoint: str, status: str, seconds: float, rate_limited_reason: str | None) -> None:
        self._record("stripe_called", endpoint, status, rate_limited_reason)

    def pacer_waited(self, seconds: float) -> None:
        self._record("pacer_waited")

    def read_answered(self, endpoint: str, status: int, seconds: float) -> None:
        self._record("read_answered", endpoint, status)

    def long_poll(self, state: str) -> None:
        self._record("long_poll", state)


class FakeFeedService:
    """The access feed and snapshot as the service serves them (`entitlement_sync.client.Transport`), over an
    in-memory table. Knobs: `down` (no answer), `status` (answer that instead), `between_pages` (runs
    between two snapshot pages, as concurrent writes would), `prune()` (cursors up to now answer 410)."""

    def __init__(self) -> None:
        self.table: dict[tuple[str, str], bool] = {}
        self.changes: list[dict[str, Any]] = []
        self.pruned_through = 0
        self.down = False
        self.status = 200
        self.between_pages: Callable[[], None] | None = None
        self.requests: list[tuple[str, dict[str, Any]]] = []

    def flip(self, customer: str, key: str, granted: bool) -> None:
        self.table[customer, key] = granted
        change = "granted" if granted else "revoked"
        self.changes.append(
            {"cursor": len(self.changes) + 1, "customer": customer, "lookup_key": key, "change": change}
        )

    def prune(self) -> None:
        self.pruned_through = len(self.changes)

    def get(self, path: str, params: dict[str, Any], timeout: float) -> tuple[int, Any]:
        from entitlement_sync.client import TransportError

        self.requests.append((path, params))
        if self.down:
            raise TransportError("connection refused")
        if self.status != 200:
            return self.status, {"error": "unavailable"}
        if path == "/v1/access-snapshot":
            return 200, self._snapshot(params["after_customer"], params["limit"])
        after = int(params["after"])
        if after < self.pruned_through or after > len(self.changes):
            return 410, {"error": "take a new snapshot"}
        page = self.changes[after : after + int(params["limit"])]
        return 200, {"changes": page, "next_cursor": page[-1]["cursor"] if page else after}

    def _snapshot(self, after_customer: str, limit: int) -> dict[str, Any]:
        if after_customer and self.between_pages is not None:
            self.between_pages()
        customers = sorted({c for c, _ in self.table if c > after_customer})[:limit]
        rows = [
            {"customer": c, "lookup_key": k, "granted": g} for (c, k), g in sorted(self.table.items()) if c in customers
        ]
        more = len(customers) == limit
        return {"cursor": len(self.changes), "access": rows, "next_after_customer": customers[-1] if more else None}

    def close(self) -> None:
        pass


class RecordingDeliveryQueue:
    """A DeliveryQueue that only notes each kick (subscriber URL, delay in seconds): tests drain by hand."""

    def __init__(self) -> None:
        self.kicks: list[tuple[str, float]] = []

    def kick(self, subscriber_url: str, delay_seconds: float = 0) -> None:
        self.kicks.append((subscriber_url, delay_seconds))


def summary_signal(customer_id: str, entitlements: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    """A summary event whose payload says Stripe holds more than it shows (`has_more: true`), as it does past 10
    entitlements: the worker must fetch. Tests of the fetch path use it; a complete `summary_event` is written
    from its payload when it is provably newer than the rows (see docs/design.md)."""
    body = summary_event(customer_id, entitlements, **fields)
    body["data"]["object"]["entitlements"]["has_more"] = True
    return body


def syncer_with_policy(container: Any, policy_class: type[AccessPolicy]) -> tuple[Syncer, AccessPolicy]:
    """The container's Syncer, but over an access policy of the test's (a fake with a bug in it, say)."""
    clock = lambda: datetime.now(UTC)  # noqa: E731
    policy = policy_class(container.new_session, container.settings.policy_rules, clock)
    return Syncer(container.new_session, container.gateway, clock, access_policy=policy), policy
