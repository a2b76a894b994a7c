"""Use case: deliver the outbox of access webhooks (outbox.py) to each subscriber (the operators' side, `deliveries
list|replay`, is deliveries.py).

Order: each subscriber is drained in outbox id order, one post at a time, and a delivery is tried only once
every earlier one of that subscriber was delivered (or gave up). Outbox ids of one customer grow in the order
their changes committed (recompute locks the customer), so a subscriber never gets a customer's later change
before an earlier one. One drain per subscriber at a time: its oldest pending rows (up to 20) are locked
(FOR UPDATE NOWAIT) while they are posted, in one transaction; a drain in another process finds them locked
and leaves, one in this process asks the drain under way to go round once more, and a drain re-reads after
every commit, so it also takes what was written meanwhile.

While a subscriber is down its head is retried with pauses doubling from 1 s to
ACCESS_WEBHOOK_MAX_PAUSE_SECONDS and everything behind it waits, pending: that is its circuit breaker (one probe
per pause, never one request per waiting change), and nothing is lost. The cost: one subscriber's deliveries
go one at a time (throughput 1 / its latency), and a message it keeps refusing holds up the ones behind it
until ACCESS_WEBHOOK_RETRY_FOR_SECONDS ends its retries (it is then `failed`, kept for `deliveries replay`).
Other subscribers never wait for it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from . import store
from .db import SessionFactory, transaction
from .errors import QueueUnavailable
from .logs import get_logger
from .models import DeliveryStatus, WebhookDelivery
from .ports import Clock, DeliveryQueue, PostOutcome, WaitRule, WebhookPoster, WebhookSubscriber
from .redaction import without_password as _shown  # a URL may carry credentials: never log them
from .store.deliveries import HeadBusy

log = get_logger(__name__)

# A drain hands over to a fresh job after this many deliveries or seconds: jobs stay short, and a long backlog
# never holds a worker thread past its time limit.
BATCH = 200
BATCH_SECONDS = 30.0
# Posts per transaction: fewer commits; a crash sends at most this many again (with their webhook-id).
ROWS_PER_COMMIT = 20


@dataclass(frozen=True)
class DrainReport:
    delivered: int
    gave_up: int
    stopped: str  # empty | retrying | waiting | busy | handed_over | unknown_subscriber


@dataclass(frozen=True)
class _Step:
    delivered: int = 0
    gave_up: int = 0
    stopped: str = "more"  # more | empty | retrying | waiting | busy
    retry_at: datetime | None = None


class Deliverer:
    def __init__(
        self,
        new_session: SessionFactory,
        subscribers: Sequence[WebhookSubscriber],
        poster: WebhookPoster,
        queue: DeliveryQueue,
        clock: Clock,
        retry: WaitRule,
        on_outcome: Callable[[str, str, float], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._new_session = new_session
        self._subscribers = {subscriber.url: subscriber for subscriber in subscribers}
        # One drain per subscriber in this process (SQLite has no row locks, and a thread waiting on another's
        # row lock is a thread wasted); a kick that finds it under way asks it to go round once more.
        self._turns_lock = threading.Lock()
        self._draining: set[str] = set()
        self._asked_again: set[str] = set()
        self._poster = poster
        self._queue = queue
        self._clock = clock
        self._retry = retry
        # (subscriber URL, outcome, seconds the delivery had waited since written or replayed)
        self._on_outcome = on_outcome or (lambda subscriber, outcome, waited: None)
        self._monotonic = monotonic

    # --- the workers' side ----------------------------------------------------------------------------------

    def drain(self, subscriber_url: str) -> DrainReport:
        """Deliver the subscriber's pending deliveries in order until one fails, none is due, or a batch is done."""
        subscriber = self._subscribers.get(subscriber_url)
        if subscriber is None:
            hint = "not in ACCESS_WEBHOOK_URLS"
            log.warning("webhooks.unknown_subscriber", subscriber=_shown(subscriber_url), hint=hint)
            return DrainReport(0, 0, "unknown_subscriber")
        with self._turns_lock:
            if subscriber_url in self._draining:
                self._asked_again.add(subscriber_url)  # the drain under way goes round once more for this
                return DrainReport(0, 0, "busy")
            self._draining.add(subscriber_url)
        try:
            while True:
                report = self._drain(subscriber)
                with self._turns_lock:
                    # Only a drain that found nothing left goes round again: one that stopped on a failure, a
                    # pause or a hand-over has a job coming for the rest.
                    if report.stopped != "empty" or subscriber_url not in self._asked_again:
                        self._draining.discard(subscriber_url)
                        self._asked_again.discard(subscriber_url)
                        return report
                    self._asked_again.discard(subscriber_url)
        except BaseException:
            with self._turns_lock:
                self._draining.discard(subscriber_url)
                self._asked_again.discard(subscriber_url)
            raise

    def _drain(self, subscriber: WebhookSubscriber) -> DrainReport:
        delivered = gave_up = 0
        deadline = self._monotonic() + BATCH_SECONDS
        while delivered + gave_up < BATCH:
            step = self._deliver_some(subscriber, deadline)
            delivered, gave_up = delivered + step.delivered, gave_up + step.gave_up
            if step.stopped != "more":
                if step.stopped == "retrying":
                    self._kick(subscriber.url, step.retry_at)
                return self._report(subscriber, delivered, gave_up, step.stopped)
            if self._monotonic() > deadline:
                break
        self._kick(subscriber.url, None)
        return self._report(subscriber, delivered, gave_up, "handed_over")

    def _report(self, subscriber: WebhookSubscriber, delivered: int, gave_up: int, stopped: str) -> DrainReport:
        if delivered or gave_up:
            counts = {"delivered": delivered, "gave_up": gave_up}
            log.info("webhooks.drained", subscriber=_shown(subscriber.url), **counts, stopped=stopped)
        return DrainReport(delivered, gave_up, stopped)

    def _deliver_some(self, subscriber: WebhookSubscriber, deadline: float) -> _Step:
        """Post the subscriber's oldest pending deliveries in order, in one transaction, until one fails (or a
        few were sent, or time is up): one commit for several posts. A crash before the commit sends them again,
        with their webhook-id: at least once, as always."""
        step = _Step()
        try:
            with transaction(self._new_session) as session:
                rows = store.deliveries.lock_heads(session, subscriber.url, ROWS_PER_COMMIT)
                if not rows:
                    return _Step(stopped="empty")
                if rows[0].next_attempt_at is not None and rows[0].next_attempt_at > self._clock():
                    return _Step(stopped="waiting")  # a delayed job for it is on its way
                for row in rows:
                    now = self._clock()
                    self._record(row, self._poster.post(subscriber, row.message_id, row.body, now), now)
                    result = "retrying" if row.status == DeliveryStatus.PENDING else row.status
                    self._on_outcome(subscriber.url, result, (now - row.pending_since).total_seconds())
                    if result == "retrying":
                        return replace(step, stopped="retrying", retry_at=row.next_attempt_at)
                    step = replace(step, delivered=step.delivered + (result == DeliveryStatus.DELIVERED))
                    step = replace(step, gave_up=step.gave_up + (result == DeliveryStatus.FAILED))
                    if self._monotonic() > deadline:
                        break
                # "more" even after a short batch: what committed while these were posted (its kick found this
                # drain busy and left) is found by the next read, after this commit.
                return step
        except HeadBusy:
            return _Step(stopped="busy")

    def _record(self, head: WebhookDelivery, outcome: PostOutcome, now: datetime) -> None:
        head.attempts += 1
        head.last_attempt_at, head.last_status, head.last_error = now, outcome.status, outcome.error
        if outcome.delivered:
            head.status, head.delivered_at, head.next_attempt_at = DeliveryStatus.DELIVERED, now, None
            return
        if now - head.pending_since >= self._retry.give_up_after:
            head.status, head.next_attempt_at = DeliveryStatus.FAILED, None
            log.warning("webhooks.gave_up", delivery=head.id, subscriber=_shown(head.subscriber), error=outcome.error)
            return
        head.next_attempt_at = now + self._retry.pause(head.attempts - 1)
        log.info("webhooks.retrying", delivery=head.id, attempts=head.attempts, error=outcome.error)

    def _kick(self, subscriber_url: str, at: datetime | None) -> bool:
        delay = 0.0 if at is None else max((at - self._clock()).total_seconds(), 0.0)
        try:
            self._queue.kick(subscriber_url, delay)
            return True
        except QueueUnavailable as error:  # the rows stay pending: the sweep kicks them
            log.warning("webhooks.kick_failed", subscriber=_shown(subscriber_url), error=str(error))
            return False

    def kick_due(self) -> int:
        """The sweep's part: ask a worker to drain every subscriber whose head is due (after a broker outage,
        a lost job, a worker killed mid-drain). Returns how many subscribers were kicked."""
        with self._new_session() as session:
            heads = store.deliveries.heads(session)
        now, kicked = self._clock(), 0
        for head in heads:
            due = head.next_attempt_at is None or head.next_attempt_at <= now
            if head.subscriber in self._subscribers and due:
                if not self._kick(head.subscriber, None):
                    break
                kicked += 1
        return kicked
