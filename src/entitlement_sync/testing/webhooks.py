"""`WebhookSender`: delivers a FakeStripe's events to a webhook URL, signed and retried the way Stripe does.

Any 2xx counts as delivered; any other answer (a redirect included) or a connection error is retried with
exponential backoff on a compressed time scale (`base_delay` 0.2 s stands for Stripe's minutes and hours) up
to `max_attempts`, then given up. Knobs, all seeded by `seed`:

- `duplicate_share`: share of events delivered twice (Stripe does not promise exactly-once);
- `reorder_window`: shuffle each batch of up to this many waiting events (Stripe does not promise order);
- `hold_back_share`: share of a batch's events kept back for a later batch (heavier reordering);
- `delay`: seconds before the first attempt;
- `event_types`: send only these types, like an endpoint's enabled events (default: all);
- `hold()` / `release(reverse=...)`: hold events back, then let them go in a chosen order (scripted stories);
- `throttle(n)`: wait until at most n deliveries are due or in flight, so the account changes while events fly.
"""

from __future__ import annotations

import heapq
import itertools
import json
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.client import HTTPConnection, HTTPException, HTTPSConnection
from typing import Any, NamedTuple
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


class DeliveryRecord(NamedTuple):
    """One HTTP attempt: the event, the HTTP status (0 when nothing answered), how long it took, the answer's body."""

    event_id: str
    status: int
    seconds: float
    answer: bytes


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
        hold_back_share: float = 0.0,
        delay: float = 0.0,
        seed: int = 0,
        event_types: Iterable[str] | None = None,
    ) -> None:
        self.stripe, self.url = stripe, url
        self.secrets = (secret,) if isinstance(secret, str) else tuple(secret)
        self.threads, self.max_attempts, self.timeout = threads, max_attempts, timeout
        self.base_delay, self.max_delay = base_delay, max_delay
        self.duplicate_share, self.reorder_window, self.delay = duplicate_share, reorder_window, delay
        self.hold_back_share = hold_back_share
        self.random = random.Random(seed)
        # Like an endpoint's enabled events in Stripe's dashboard; None sends every type.
        self.event_types = None if event_types is None else frozenset(event_types)
        self.deliveries: list[DeliveryRecord] = []  # every attempt, in the order they were answered
        self._counts: dict[str, int] = dict.fromkeys(SenderStats.__dataclass_fields__, 0)
        self._waiting: list[_Delivery] = []  # not yet scheduled (held, held back or awaiting reordering)
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
        return self._wait(lambda: not (self._waiting or self._scheduled or self._in_flight), timeout, force=True)

    def throttle(self, max_pending: int, timeout: float = 120.0) -> bool:
        """Wait until at most `max_pending` deliveries are due or in flight (events held back do not count)."""
        return self._wait(lambda: len(self._scheduled) + self._in_flight <= max_pending, timeout, force=False)

    def _wait(self, done: Callable[[], bool], timeout: float, *, force: bool) -> bool:
        deadline = time.monotonic() + timeout
        with self._changed:
            self._schedule_waiting(force=force)
            while not done():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.05))
                self._schedule_waiting(force=force)
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
            self._waiting.append(_Delivery(event))
            self._schedule_waiting(force=False)

    def _schedule_waiting(self, *, force: bool, shuffle: bool = True) -> None:
        """Schedule the waiting batch; unless forced, a share is held back, and each copy goes with a later batch."""
        if self._held or not self._waiting or (not force and len(self._waiting) < self.reorder_window):
            return
        batch, self._waiting = self._waiting, []
        if shuffle and self.reorder_window > 1:
            self.random.shuffle(batch)
        due = time.monotonic() + self.delay
        for delivery in batch:
            if not force and self.random.random() < self.hold_back_share:
                self._waiting.append(delivery)
                continue
            self._push(delivery, due)
            if not delivery.duplicate and self.random.random() < self.duplicate_share:
                self._waiting.append(_Delivery(delivery.event, duplicate=True))

    def _push(self, delivery: _Delivery, due: float) -> None:
        heapq.heappush(self._scheduled, (due, next(self._order), delivery))
        self._changed.notify_all()

    def _work(self) -> None:
        while True:
            delivery = self._next_due()
            if delivery is None:
                return
            started = time.monotonic()
            status, answer = self._post(delivery.event)
            self._record(delivery, DeliveryRecord(delivery.event["id"], status, time.monotonic() - started, answer))

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

    def _post(self, event: dict[str, Any]) -> tuple[int, bytes]:
        """POST one delivery; its HTTP status (0 when nothing answered) and the answer's body.

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
            return response.status, response.read()
        except (OSError, HTTPException):
            return 0, b""
        finally:
            connection.close()

    def _record(self, delivery: _Delivery, record: DeliveryRecord) -> None:
        accepted = 200 <= record.status < 300
        if accepted:
            self.stripe.events.mark_delivered(delivery.event["id"])
        with self._changed:
            self._in_flight -= 1
            self.deliveries.append(record)
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
