"""A webhook sender that behaves like Stripe's (duplicates, no ordering, redelivery until a 2xx), driven batch
by batch by the scenarios. The Stripe API's faults are the simulator's own (`FakeStripe.faults`).

Seeded, so a failing run can be replayed; thread scheduling still varies between runs.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import requests

from entitlement_sync.testing import sign
from tests.e2e.harness import WEBHOOK_SECRET


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
