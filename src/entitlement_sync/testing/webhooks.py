"""`WebhookSender`: delivers a FakeStripe's events to a webhook URL, signed and retried the way Stripe does.

Any 2xx counts as delivered; any other answer (a redirect included) or a connection error is retried with
exponential backoff on a compressed time scale (`base_delay` 0.2 s stands for Stripe's minutes and hours) up
to `max_attempts`, then given up. Knobs, all seeded by `seed`:

- `duplicate_share`: share of events delivered twice (Stripe does not promise exactly-once);
- `reorder_window`: shuffle each batch of up to this many waiting events (Stripe does not promise order);
- `delay`: seconds before the first attempt;
- `event_types`: send only these types, like an endpoint's enabled events (default: all);
- `hold()` / `release(reverse=...)`: hold events back, then let them go in a chosen order (scripted stories).
"""

from __future__ import annotations

import heapq
import itertools
import json
import random
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from http.client import HTTPConnection, HTTPException, HTTPSConnection
from typing import Any
from urllib.parse import urlsplit

from . import shapes
from .simulator import FakeStripe


@dataclass(frozen=True)
class SenderStats:
    """What the sender did so far. `sent` counts every HTTP attempt, duplicates and retries included."""

    sent: int = 0
    accepted: int = 0  # attempts answered 2xx
    failures: int = 0  # attempts answered non-2xx or not answered at all
    retries: int = 0  # attempts scheduled again after a failure
    duplicates_sent: int = 0  # extra copies of an event, beyond its first delivery
    gave_up: int = 0  # deliveries abandoned after max_attempts


@dataclass(frozen=True)
class _Delivery:
    event: dict[str, Any]
    attempt: int = 1
    duplicate: bool = False


class WebhookSender:
    """Signs and delivers every event the FakeStripe records from `start()` on, on `threads` threads."""

    def __init__(
        self,
        stripe: FakeStripe,
        url: str,
        secret: str | tuple[str, ...],
        *,
        threads: int = 4,
        max_attempts: int = 5,
        base_delay: float = 0.2,
        max_delay: float = 5.0,
        timeout: float = 10.0,
        duplicate_share: float = 0.0,
        reorder_window: int = 1,
        delay: float = 0.0,
        seed: int = 0,
        event_types: Iterable[str] | None = None,
    ) -> None:
        self.stripe, self.url = stripe, url
        self.secrets = (secret,) if isinstance(secret, str) else tuple(secret)
        self.threads, self.max_attempts, self.timeout = threads, max_attempts, timeout
        self.base_delay, self.max_delay = base_delay, max_delay
        self.duplicate_share, self.reorder_window, self.delay = duplicate_share, reorder_window, delay
        self.random = random.Random(seed)
        # Like an endpoint's enabled events in Stripe's dashboard; None sends every type.
        self.event_types = None if event_types is None else frozenset(event_types)
        self.deliveries: list[tuple[str, int]] = []  # (event id, HTTP status or 0 for no answer), in send order
        self._counts: dict[str, int] = dict.fromkeys(SenderStats.__dataclass_fields__, 0)
        self._waiting: list[dict[str, Any]] = []  # heard, not yet scheduled (held or awaiting reordering)
        self._scheduled: list[tuple[float, int, _Delivery]] = []  # a heap by due time
        self._in_flight = 0
        self._held = False
        self._order = itertools.count()
        self._changed = threading.Condition()
        self._stopping = False
        self._workers: list[threading.Thread] = []

    # --- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> WebhookSender:
        self.stripe.events.listen(self._hear)
        for index in range(self.threads):
            worker = threading.Thread(target=self._work, name=f"webhook-sender-{index}", daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def stop(self) -> None:
        """Stop listening and sending; deliveries still waiting are dropped."""
        self.stripe.events.unlisten(self._hear)
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        for worker in self._workers:
            worker.join(timeout=self.timeout + 1)

    def __enter__(self) -> WebhookSender:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until every event heard so far was delivered or given up; False if `timeout` passed first.

        Held events (`hold()`) count as not delivered: release them first.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            self._schedule_waiting(force=True)
            while self._waiting or self._scheduled or self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.05))
                self._schedule_waiting(force=True)
            return True

    @property
    def stats(self) -> SenderStats:
        with self._changed:
            return SenderStats(**self._counts)

    # --- scripted order ------------------------------------------------------------------------------

    def hold(self) -> None:
        """Keep new events back until `release()`."""
        with self._changed:
            self._held = True

    def release(self, *, reverse: bool = False) -> None:
        """Send the held events, newest first when `reverse` (an out-of-order delivery)."""
        with self._changed:
            self._held = False
            if reverse:
                self._waiting.reverse()
            self._schedule_waiting(force=True, shuffle=False)

    def redeliver(self, event_id: str) -> None:
        """Deliver this event once more, as Stripe sometimes does; counted as a duplicate."""
        event = self.stripe.events.get(event_id)
        if event is None:
            raise KeyError(event_id)
        with self._changed:
            self._push(_Delivery(event, duplicate=True), time.monotonic())

    # --- internals -----------------------------------------------------------------------------------

    def _hear(self, event: dict[str, Any]) -> None:
        if self.event_types is not None and event["type"] not in self.event_types:
            return
        with self._changed:
            self._waiting.append(event)
            self._schedule_waiting(force=False)

    def _schedule_waiting(self, *, force: bool, shuffle: bool = True) -> None:
        if self._held or not self._waiting or (not force and len(self._waiting) < self.reorder_window):
            return
        batch, self._waiting = self._waiting, []
        if shuffle and self.reorder_window > 1:
            self.random.shuffle(batch)
        due = time.monotonic() + self.delay
        for event in batch:
            self._push(_Delivery(event), due)
            if self.random.random() < self.duplicate_share:
                self._push(_Delivery(event, duplicate=True), due)

    def _push(self, delivery: _Delivery, due: float) -> None:
        heapq.heappush(self._scheduled, (due, next(self._order), delivery))
        self._changed.notify_all()

    def _work(self) -> None:
        while True:
            delivery = self._next_due()
            if delivery is None:
                return
            status = self._post(delivery.event)
            self._record(delivery, status)

    def _next_due(self) -> _Delivery | None:
        with self._changed:
            while not self._stopping:
                # A partial reordering batch should not wait forever for companions.
                self._schedule_waiting(force=not self._scheduled and not self._in_flight)
                if self._scheduled and self._scheduled[0][0] <= time.monotonic():
                    self._in_flight += 1
                    return heapq.heappop(self._scheduled)[2]
                wait = self._scheduled[0][0] - time.monotonic() if self._scheduled else 0.05
                self._changed.wait(max(0.001, min(wait, 0.05)))
            return None

    def _post(self, event: dict[str, Any]) -> int:
        """POST one delivery; its HTTP status, or 0 when nothing answered.

        http.client rather than requests: a test that mocks Stripe's API with `responses` intercepts every
        requests call, and would swallow the deliveries too. Redirects are not followed: Stripe counts them
        as failures.
        """
        body = json.dumps(event).encode()
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            "Stripe-Signature": shapes.sign_with_secrets(body, self.secrets),
        }
        url = urlsplit(self.url)
        connection_class = HTTPSConnection if url.scheme == "https" else HTTPConnection
        connection = connection_class(url.netloc, timeout=self.timeout)
        try:
            connection.request("POST", url.path or "/", body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            return response.status
        except (OSError, HTTPException):
            return 0
        finally:
            connection.close()

    def _record(self, delivery: _Delivery, status: int) -> None:
        accepted = 200 <= status < 300
        if accepted:
            self.stripe.events.mark_delivered(delivery.event["id"])
        with self._changed:
            self._in_flight -= 1
            self.deliveries.append((delivery.event["id"], status))
            self._counts["sent"] += 1
            self._counts["duplicates_sent"] += delivery.duplicate and delivery.attempt == 1
            self._counts["accepted" if accepted else "failures"] += 1
            if not accepted and delivery.attempt < self.max_attempts:
                self._counts["retries"] += 1
                backoff = min(self.max_delay, self.base_delay * 2 ** (delivery.attempt - 1))
                retry = _Delivery(delivery.event, delivery.attempt + 1, delivery.duplicate)
                self._push(retry, time.monotonic() + backoff)
            elif not accepted:
                self._counts["gave_up"] += 1
            self._changed.notify_all()
