"""Use cases: deliver the outbox of access webhooks (outbox.py) to each subscriber, and the operators' view of it
(`entitlement-sync deliveries list|replay`).

Order: each subscriber is drained in outbox id order, one delivery at a time, and a delivery is tried only
once every earlier one of that subscriber was delivered (or gave up). Outbox ids of one customer grow in the
order their changes committed (recompute locks the customer), so a subscriber never gets a customer's later
change before an earlier one. One drain per subscriber at a time: the head row is locked (FOR UPDATE NOWAIT)
while it is posted; a second drain finds it locked and leaves, and the first re-reads the head after every
commit, so it also takes what was written meanwhile.

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
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session

from . import store
from .db import SessionFactory, transaction
from .errors import QueueUnavailable
from .logs import get_logger
from .models import DeliveryStatus, WebhookDelivery
from .ports import Clock, DeliveryQueue, PostOutcome, WaitRule, WebhookPoster, WebhookSubscriber
from .store.deliveries import DeliveryFilter, HeadBusy

log = get_logger(__name__)

# A drain hands over to a fresh job after this many deliveries or seconds: jobs stay short, and a long backlog
# never holds a worker thread past its time limit.
BATCH = 200
BATCH_SECONDS = 30.0


@dataclass(frozen=True)
class DrainReport:
    delivered: int
    gave_up: int
    stopped: str  # empty | retrying | waiting | busy | handed_over | unknown_subscriber


@dataclass(frozen=True)
class DeliverySummary:
    id: int
    subscriber: str
    message_id: str
    customer_id: str
    lookup_key: str
    type: str
    status: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    delivered_at: datetime | None


@dataclass
class ReplayReport:
    reopened: list[int] = field(default_factory=list)
    skipped: dict[int, str] = field(default_factory=dict)
    unkicked: list[str] = field(default_factory=list)  # subscribers the broker could not be asked about now


class Deliverer:
    def __init__(
        self,
        new_session: SessionFactory,
        subscribers: Sequence[WebhookSubscriber],
        poster: WebhookPoster,
        queue: DeliveryQueue,
        clock: Clock,
        retry: WaitRule,
        on_outcome: Callable[[str], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._new_session = new_session
        self._subscribers = {subscriber.url: subscriber for subscriber in subscribers}
        # SQLite has no row locks: drains of one subscriber in this process take turns here (one process only).
        self._turns = {url: threading.Lock() for url in self._subscribers}
        self._poster = poster
        self._queue = queue
        self._clock = clock
        self._retry = retry
        self._on_outcome = on_outcome or (lambda outcome: None)
        self._monotonic = monotonic

    # --- the workers' side ----------------------------------------------------------------------------------

    def drain(self, subscriber_url: str) -> DrainReport:
        """Deliver the subscriber's pending deliveries in order until one fails, none is due, or a batch is done."""
        subscriber = self._subscribers.get(subscriber_url)
        if subscriber is None:
            log.warning("webhooks.unknown_subscriber", subscriber=subscriber_url, hint="not in ACCESS_WEBHOOK_URLS")
            return DrainReport(0, 0, "unknown_subscriber")
        turn = self._turns[subscriber_url]
        if not turn.acquire(blocking=False):
            return DrainReport(0, 0, "busy")
        try:
            return self._drain(subscriber)
        finally:
            turn.release()

    def _drain(self, subscriber: WebhookSubscriber) -> DrainReport:
        delivered = gave_up = 0
        deadline = self._monotonic() + BATCH_SECONDS
        for _ in range(BATCH):
            outcome, retry_at = self._deliver_head(subscriber)
            if outcome == DeliveryStatus.DELIVERED:
                delivered += 1
            elif outcome == DeliveryStatus.FAILED:
                gave_up += 1
            else:
                if outcome == "retrying":
                    self._kick(subscriber.url, retry_at)
                return self._report(subscriber, delivered, gave_up, outcome)
            if self._monotonic() > deadline:
                break
        self._kick(subscriber.url, None)
        return self._report(subscriber, delivered, gave_up, "handed_over")

    def _report(self, subscriber: WebhookSubscriber, delivered: int, gave_up: int, stopped: str) -> DrainReport:
        if delivered or gave_up:
            counts = {"delivered": delivered, "gave_up": gave_up}
            log.info("webhooks.drained", subscriber=subscriber.url, **counts, stopped=stopped)
        return DrainReport(delivered, gave_up, stopped)

    def _deliver_head(self, subscriber: WebhookSubscriber) -> tuple[str, datetime | None]:
        """Post the subscriber's head if it is due; (what became of it, when to try it again)."""
        try:
            with transaction(self._new_session) as session:
                head = store.deliveries.lock_head(session, subscriber.url)
                if head is None:
                    return "empty", None
                now = self._clock()
                if head.next_attempt_at is not None and head.next_attempt_at > now:
                    return "waiting", head.next_attempt_at  # a delayed job for it is on its way
                self._record(head, self._poster.post(subscriber, head.message_id, head.body, now), now)
                result = "retrying" if head.status == DeliveryStatus.PENDING else head.status
                self._on_outcome(result)
                return result, head.next_attempt_at
        except HeadBusy:
            return "busy", None

    def _record(self, head: WebhookDelivery, outcome: PostOutcome, now: datetime) -> None:
        head.attempts += 1
        head.last_attempt_at, head.last_status, head.last_error = now, outcome.status, outcome.error
        if outcome.delivered:
            head.status, head.delivered_at, head.next_attempt_at = DeliveryStatus.DELIVERED, now, None
            return
        if now - head.pending_since >= self._retry.give_up_after:
            head.status, head.next_attempt_at = DeliveryStatus.FAILED, None
            log.warning("webhooks.gave_up", delivery=head.id, subscriber=head.subscriber, error=outcome.error)
            return
        head.next_attempt_at = now + self._retry.pause(head.attempts - 1)
        log.info("webhooks.retrying", delivery=head.id, attempts=head.attempts, error=outcome.error)

    def _kick(self, subscriber_url: str, at: datetime | None) -> bool:
        delay = 0.0 if at is None else max((at - self._clock()).total_seconds(), 0.0)
        try:
            self._queue.kick(subscriber_url, delay)
            return True
        except QueueUnavailable as error:  # the rows stay pending: the sweep kicks them
            log.warning("webhooks.kick_failed", subscriber=subscriber_url, error=str(error))
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

    # --- the operators' side (`entitlement-sync deliveries`) ---------------------------------------------------

    def list_deliveries(self, where: DeliveryFilter) -> list[DeliverySummary]:
        with self._new_session() as session:
            return [summary(row) for row in store.deliveries.find(session, where)]

    def replay(
        self,
        ids: Sequence[int] = (),
        *,
        failed: bool = False,
        since: datetime | None = None,
        subscriber: str | None = None,
        dry_run: bool = False,
    ) -> ReplayReport:
        """Send deliveries again: the given ids, or every failed one, or every one (delivered or failed) written
        since a moment; narrowed to one subscriber. They keep their ids (and `webhook-id`), so they go first."""
        report = ReplayReport()
        with transaction(self._new_session) as session:
            rows = self._replayable(session, ids, failed, since, subscriber)
            for row in rows:
                reason = self._refusal(row)
                if reason:
                    report.skipped[row.id] = reason
                else:
                    report.reopened.append(row.id)
            report.skipped.update({n: "not in the outbox" for n in set(ids) - {row.id for row in rows}})
            if report.reopened and not dry_run:
                store.deliveries.reopen(session, report.reopened, self._clock())
        if not dry_run:
            kicked = {row.subscriber for row in rows if row.id in report.reopened}
            report.unkicked = [url for url in sorted(kicked) if not self._kick(url, None)]
        return report

    def _replayable(
        self, session: Session, ids: Sequence[int], failed: bool, since: datetime | None, subscriber: str | None
    ) -> list[WebhookDelivery]:
        if ids:
            return store.deliveries.by_ids(session, ids)
        status = DeliveryStatus.FAILED if failed else None
        return store.deliveries.replayable(session, status, since, subscriber)

    def _refusal(self, row: WebhookDelivery) -> str | None:
        if row.status == DeliveryStatus.PENDING:
            return "already pending"
        if row.subscriber not in self._subscribers:
            return "its subscriber is no longer in ACCESS_WEBHOOK_URLS"
        return None

    def pending_summary(self) -> tuple[int, datetime | None]:
        with self._new_session() as session:
            return store.deliveries.pending_summary(session)


def summary(row: WebhookDelivery) -> DeliverySummary:
    return DeliverySummary(
        id=row.id,
        subscriber=row.subscriber,
        message_id=row.message_id,
        customer_id=row.customer_id,
        lookup_key=row.lookup_key,
        type=row.type,
        status=row.status,
        attempts=row.attempts,
        created_at=row.created_at,
        next_attempt_at=row.next_attempt_at,
        last_attempt_at=row.last_attempt_at,
        last_status=row.last_status,
        last_error=row.last_error,
        delivered_at=row.delivered_at,
    )
