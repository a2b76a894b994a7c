"""Faults on both sides of the service: a Stripe API that misbehaves, and a webhook sender that behaves like
Stripe's (duplicates, no ordering, redelivery until a 2xx).

Both are seeded, so a failing run can be replayed; thread scheduling still varies between runs.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import requests

from entitlement_sync.testing import FakeStripe, error_body, sign
from entitlement_sync.testing.simulator import Answer, Query
from tests.e2e.harness import WEBHOOK_SECRET


class ChaosStripe(FakeStripe):
    """FakeStripe whose answers fail at random: a share of 429s and 5xx, a per-second rate limit, latency.

    Overrides `_answer`, which `FakeStripe.handle` wraps, so every injected fault is also in `calls`.
    (The simulator branch brings the same knobs as `FakeStripe.faults`; once merged, this class can go.)
    """

    def __init__(
        self,
        api_key: str,
        *,
        seed: int = 0,
        share_429: float = 0.0,
        share_5xx: float = 0.0,
        requests_per_second: int | None = None,
        latency_seconds: float = 0.0,
    ) -> None:
        super().__init__(api_key)
        self.share_429, self.share_5xx = share_429, share_5xx
        self.requests_per_second = requests_per_second
        self.latency_seconds = latency_seconds
        self.injected: Counter[str] = Counter()
        self._random = random.Random(seed)
        self._admitted: deque[float] = deque()  # monotonic times of requests let through in the last second
        self._chaos_lock = threading.Lock()

    def _answer(self, method: str, path: str, query: Query, headers: dict[str, str]) -> Answer:
        if self.latency_seconds:
            time.sleep(self.latency_seconds)
        fault = self._draw_fault()
        return fault if fault is not None else super()._answer(method, path, query, headers)

    def _draw_fault(self) -> Answer | None:
        with self._chaos_lock:
            now = time.monotonic()
            while self._admitted and self._admitted[0] <= now - 1.0:
                self._admitted.popleft()
            if self.requests_per_second is not None and len(self._admitted) >= self.requests_per_second:
                self.injected["429 rate limit"] += 1
                return _too_many_requests("global-rate")
            self._admitted.append(now)
            draw = self._random.random()
            if draw < self.share_429:
                self.injected["429 random"] += 1
                return _too_many_requests("global-concurrency")
            if draw < self.share_429 + self.share_5xx:
                status = self._random.choice((500, 502, 503))
                self.injected[f"{status}"] += 1
                return status, {}, error_body("api_error", f"Simulated HTTP {status}")
        return None

    def call_statuses(self) -> Counter[int]:
        return Counter(call.status for call in list(self.calls))


def _too_many_requests(reason: str) -> Answer:
    body = error_body("invalid_request_error", "Too many requests", code="rate_limit")
    return 429, {"Stripe-Rate-Limited-Reason": reason}, body


@dataclass
class SendStats:
    events: int = 0  # distinct events handed to the sender
    deliveries: int = 0  # HTTP requests made
    duplicates_sent: int = 0  # deliberate second deliveries of an event
    redeliveries: int = 0  # deliveries repeated after a non-2xx answer or no answer
    answers: Counter[str] = field(default_factory=Counter)  # the service's "status": accepted, duplicate, ignored
    http_statuses: Counter[int] = field(default_factory=Counter)  # 0 is "no answer"
    slowest_seconds: float = 0.0
    delivered: set[str] = field(default_factory=set)  # event ids that got a 2xx
    undelivered: set[str] = field(default_factory=set)  # event ids still without a 2xx at the deadline

    def figures(self) -> dict[str, Any]:
        return {
            "events sent": self.events,
            "deliveries": self.deliveries,
            "accepted": self.answers["accepted"],
            "duplicates sent": self.duplicates_sent,
            "answered duplicate": self.answers["duplicate"],
            "answered ignored": self.answers["ignored"],
            "redeliveries": self.redeliveries,
            "http": dict(sorted(self.http_statuses.items())),
            "slowest answer s": round(self.slowest_seconds, 2),
        }


class WebhookSender:
    """Posts signed events from a thread pool, like Stripe: some twice, in no order, again until a 2xx.

    `send()` shuffles a batch, holds a share back for the next batch (heavy reordering) and sends a share of
    the events again with the next batch; `drain()` waits until every delivery got a 2xx or its deadline.
    """

    def __init__(
        self,
        url: str,
        *,
        seed: int,
        threads: int = 8,
        duplicate_share: float = 0.0,
        hold_back_share: float = 0.0,
        redeliver_within: float = 120.0,
        secret: str = WEBHOOK_SECRET,
    ) -> None:
        self.url = f"{url}/webhooks/stripe"
        self.stats = SendStats()
        self._secret = secret
        self._random = random.Random(seed)
        self._duplicate_share, self._hold_back_share = duplicate_share, hold_back_share
        self._redeliver_within = redeliver_within
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="webhook-sender")
        self._futures: list[Future[None]] = []
        self._held: list[tuple[str, bytes, bool]] = []
        self._stats_lock = threading.Lock()
        self._local = threading.local()

    def send(self, events: list[dict[str, Any]]) -> None:
        batch = self._held + [(item["id"], json.dumps(item).encode(), False) for item in events]
        self._held = []
        self.stats.events += len(events)
        for event_id, body, _ in batch[len(batch) - len(events) :]:
            if self._random.random() < self._duplicate_share:
                self.stats.duplicates_sent += 1
                self._held.append((event_id, body, True))  # the copy goes out with a later batch
        self._random.shuffle(batch)
        for item in batch:
            if not item[2] and self._random.random() < self._hold_back_share:
                self._held.append(item)
            else:
                self._futures.append(self._pool.submit(self._deliver, item[0], item[1]))

    def throttle(self, max_pending: int, timeout: float = 120.0) -> None:
        """Wait until at most `max_pending` deliveries are unfinished: Stripe changes while events fly."""
        deadline = time.monotonic() + timeout
        while sum(not future.done() for future in self._futures) > max_pending:
            assert time.monotonic() < deadline, f"deliveries still pending after {timeout} s"
            time.sleep(0.05)

    def drain(self, timeout: float) -> SendStats:
        held, self._held = self._held, []
        self._random.shuffle(held)
        self._futures.extend(self._pool.submit(self._deliver, event_id, body) for event_id, body, _ in held)
        done, pending = wait(self._futures, timeout)
        assert not pending, f"{len(pending)} deliveries still running after {timeout} s"
        for future in done:
            future.result()
        self._futures = []
        return self.stats

    def close(self) -> None:
        for future in self._futures:
            future.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _deliver(self, event_id: str, body: bytes) -> None:
        deadline = time.monotonic() + self._redeliver_within
        for attempt in range(1000):
            if attempt:
                with self._stats_lock:
                    self.stats.redeliveries += 1
            status, answer = self._post(body)
            if 200 <= status < 300:
                with self._stats_lock:
                    self.stats.delivered.add(event_id)
                    self.stats.answers[answer] += 1
                return
            if time.monotonic() > deadline:
                break
            time.sleep(min(2.0, 0.1 * 2**attempt) * (0.5 + random.random()))
        with self._stats_lock:
            self.stats.undelivered.add(event_id)

    def _post(self, body: bytes) -> tuple[int, str]:
        session = getattr(self._local, "session", None) or requests.Session()
        self._local.session = session
        started = time.monotonic()
        headers = {"Stripe-Signature": sign(body, self._secret), "Content-Type": "application/json"}
        try:
            response = session.post(self.url, data=body, headers=headers, timeout=15)
            status, answer = response.status_code, _answer_status(response)
        except requests.RequestException:
            status, answer = 0, "no answer"
        with self._stats_lock:
            self.stats.deliveries += 1
            self.stats.http_statuses[status] += 1
            self.stats.slowest_seconds = max(self.stats.slowest_seconds, time.monotonic() - started)
        return status, answer


def _answer_status(response: requests.Response) -> str:
    try:
        return str(response.json().get("status", "?"))
    except ValueError:
        return "not json"
