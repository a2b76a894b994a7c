"""Use case: accept a webhook. Verify, store, answer; never call Stripe here, so Stripe hears back in milliseconds."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from . import store
from .breaker import CircuitBreaker
from .db import SessionFactory, transaction
from .errors import InvalidWebhook, QueueUnavailable, StorageUnavailable
from .events import HANDLED_TYPES, InboundEvent, connect_reason, envelope_only, parse_event
from .grouped_writes import GroupedWrites, Stored
from .logs import bound, get_logger
from .models import EventStatus
from .ports import Clock, JobQueue, NoTelemetry, Telemetry, WebhookVerifier
from .store.inbox_batch import EventToStore

log = get_logger(__name__)


class Verdict(StrEnum):
    ACCEPTED = "accepted"  # stored, to be processed
    DUPLICATE = "duplicate"  # already in the inbox: Stripe delivered it again
    IGNORED = "ignored"  # stored as ignored, with the reason (another type, mode or no customer)


@dataclass(frozen=True)
class Acceptance:
    status: Verdict
    event_id: str
    reason: str | None = None
    queued: bool = False


class Receiver:
    def __init__(
        self,
        new_session: SessionFactory,
        verifier: WebhookVerifier,
        queue: JobQueue,
        clock: Clock,
        livemode: bool | None,
        breaker: CircuitBreaker | None = None,
        database_breaker: CircuitBreaker | None = None,
        telemetry: Telemetry | None = None,
        grouped_writes: GroupedWrites | None = None,
    ) -> None:
        self._new_session = new_session
        # PostgreSQL: the webhook's whole unit of work is one statement, committed with those of the webhooks
        # that arrived meanwhile (one alone is its own transaction). None: a session's transaction (SQLite).
        self._grouped_writes = grouped_writes
        self._verifier = verifier
        self._queue = queue
        self._clock = clock
        self._livemode = livemode
        # Per process: after a broker failure, skip the broker a few seconds rather than make every webhook
        # wait out its timeout; the events stay `received`, and the sweep enqueues them.
        self._breaker = breaker or CircuitBreaker(0)
        # Likewise for the database: a webhook waiting in line behind one that waits out a hung server would
        # wait twice as long; after a failure the others are told 503 at once, and Stripe delivers again.
        self._database_breaker = database_breaker or CircuitBreaker(0)
        self._telemetry = telemetry or NoTelemetry()

    def accept_webhook(self, body: bytes, signature: str | None) -> Acceptance:
        """Raises InvalidWebhook (nothing stored) or StorageUnavailable (Stripe should retry)."""
        started = time.perf_counter()
        try:
            self._verifier.verify(body, signature)
            event = parse_event(body)
        except InvalidWebhook as error:
            # Unverified bytes say nothing trustworthy about their type: count the reason only.
            self._answered("unknown", "rejected", rejection_code(str(error)), started)
            raise
        try:
            acceptance = self.accept_event(event)
        except StorageUnavailable:
            self._answered(event.type, "rejected", "database_unavailable", started)
            raise
        self._answered(event.type, acceptance.status, ignore_code(acceptance.reason), started)
        return acceptance

    def _answered(self, event_type: str, outcome: str, reason: str, started: float) -> None:
        self._telemetry.webhook_answered(event_type, outcome, reason, time.perf_counter() - started)

    def accept_event(self, event: InboundEvent) -> Acceptance:
        """Raises StorageUnavailable when the database fails, or failed moments ago (nothing is acknowledged)."""
        if not self._database_breaker.allows():
            raise StorageUnavailable("the database failed moments ago; not trying again yet")
        with bound(event_id=event.id, type=event.type, customer=event.customer_id):
            try:
                acceptance = self._accept(event)
            except StorageUnavailable:
                self._database_breaker.failed()
                raise
        self._database_breaker.succeeded()
        return acceptance

    def _accept(self, event: InboundEvent) -> Acceptance:
        """Store and commit, then enqueue: a job must never run before its event is visible.

        One transaction per webhook, one statement in it on PostgreSQL. While the broker is thought up, the event is
        stored already `queued` and sent after the commit (on PostgreSQL with its batch's jobs, in one round trip);
        only a failed send takes a second transaction, back to `received`, so the sweep enqueues it after
        RECEIVED_GRACE_SECONDS. (A process killed between the commit and
        the send leaves it `queued` without a job: the sweep finds it after STUCK_AFTER_SECONDS.)
        """
        reason = self.reason_to_ignore(event)
        send = not reason and self._breaker.allows()
        status = EventStatus.IGNORED if reason else EventStatus.QUEUED if send else EventStatus.RECEIVED
        stored = self._store(envelope_only(event) if reason else event, status, reason)
        if not stored.new:
            log.info("webhook.duplicate", outcome=Verdict.DUPLICATE)
            return Acceptance(Verdict.DUPLICATE, event.id)
        if reason:
            log.info("webhook.ignored", outcome=Verdict.IGNORED, reason=reason)
            return Acceptance(Verdict.IGNORED, event.id, reason)
        if not send:
            log.info("webhook.accepted", outcome=Verdict.ACCEPTED, queued=False, note="broker failed recently")
            return Acceptance(Verdict.ACCEPTED, event.id)
        if not (stored.queued and self._grouped_writes is not None):  # else its batch's line names it
            log.info("webhook.accepted", outcome=Verdict.ACCEPTED, queued=stored.queued)
        return Acceptance(Verdict.ACCEPTED, event.id, queued=stored.queued)

    def _store(self, event: InboundEvent, status: EventStatus, reason: str | None) -> Stored:
        """Store the event (and advance its customer's sequence, unless ignored) in one commit, then, if stored
        `queued`, send its job."""
        now, sequenced = self._clock(), reason is None
        row = EventToStore(event, status, reason, now, sequenced)
        send = self._send_committed if status == EventStatus.QUEUED else None
        if self._grouped_writes is not None:
            return self._grouped_writes.store(row, send)  # the writer sends the batch's jobs together
        with transaction(self._new_session) as session:
            new = store.inbox.store_event_if_new(session, event, status, reason, now, sequenced=sequenced)
        return Stored(new, new and send is not None and send([event.id], {event.id: event.customer_id}))

    def _send_committed(self, event_ids: Sequence[str], customers: Mapping[str, str | None]) -> bool:
        """Send the jobs of events committed as `queued`; on failure put them back to `received` for the sweep."""
        if self._breaker.failed_since_last_allowed:
            # These chose to send before another batch's send failed: on a Redis that hangs, that batch paid the
            # timeout while this one waited behind it; this one should not pay it a second time.
            self._put_back(event_ids)
            return False
        try:
            self._queue.enqueue_events(event_ids, customers)
        except QueueUnavailable as error:
            self._breaker.failed()
            log.warning("queue.unavailable", events=len(event_ids), error=str(error))
            for _ in event_ids:
                self._telemetry.enqueue_failed("receiver")
            self._put_back(event_ids)
            return False
        self._breaker.succeeded()
        return True

    def _put_back(self, event_ids: Sequence[str]) -> None:
        """From `queued` back to `received`, for the sweep to enqueue after RECEIVED_GRACE_SECONDS."""
        try:
            with transaction(self._new_session) as session:
                # Only from queued: a send that failed late (a timeout after Redis took it) may have a worker on it.
                for event_id in event_ids:
                    store.inbox.set_status(
                        session, event_id, EventStatus.RECEIVED, self._clock(), only_from=[EventStatus.QUEUED]
                    )
        except StorageUnavailable as lost:
            # The events are stored: they stay `queued`, and the sweep hands them on after STUCK_AFTER_SECONDS.
            log.warning("queue.left_queued", events=len(event_ids), error=str(lost))

    @property
    def grouped_writes(self) -> GroupedWrites | None:
        return self._grouped_writes

    def close(self) -> None:
        if self._grouped_writes is not None:
            self._grouped_writes.close()

    def enqueue_many(self, event_ids: Sequence[str]) -> tuple[list[str], list[str]]:
        """Enqueue committed events; returns (queued, pending). The first broker failure leaves the rest pending
        for the sweep rather than waiting out a timeout per event."""
        queued: list[str] = []
        if not self._breaker.allows():
            log.info("queue.skipped", pending=len(event_ids), reason="broker failed recently; left for the sweep")
            return queued, list(event_ids)
        for event_id in event_ids:
            try:
                self._queue.enqueue_event(event_id)
            except QueueUnavailable as error:
                self._breaker.failed()
                log.warning("queue.unavailable", pending=len(event_ids) - len(queued), error=str(error))
                self._telemetry.enqueue_failed("receiver")
                break
            queued.append(event_id)
        if queued:
            self._breaker.succeeded()
            with transaction(self._new_session) as session:
                store.inbox.mark_queued(session, queued, self._clock())
        return queued, list(event_ids[len(queued) :])

    def reason_to_ignore(self, event: InboundEvent) -> str | None:
        """Why this event is not for us (type, account, mode, no customer); None when it is to be processed."""
        if event.type not in HANDLED_TYPES:
            return f"event type {event.type} is not handled"
        if event.account:
            return connect_reason(event.account)
        if self._livemode is not None and event.livemode != self._livemode:
            mode = "live" if event.livemode else "test"
            key_mode = "live" if self._livemode else "test"
            return f"{mode}-mode event, but STRIPE_API_KEY is a {key_mode}-mode key"
        if event.customer_id is None:
            return "event names no customer"
        return None


# Low-cardinality codes for the metrics; the full reason goes to the log line and the stored row.
_REJECTIONS = {
    "missing Stripe-Signature": "missing_signature",
    "no webhook secret": "no_secret_configured",
    "not UTF-8": "not_utf8",
    "too old": "timestamp_too_old",
    "in the future": "timestamp_in_future",
    "does not match": "signature_mismatch",
    "malformed": "malformed_signature",
}
_IGNORES = {"is not handled": "unhandled_type", "-mode event": "other_mode", "names no customer": "no_customer"}


def rejection_code(message: str) -> str:
    return next((code for text, code in _REJECTIONS.items() if text in message), "not_an_event")


def ignore_code(reason: str | None) -> str:
    if not reason:
        return ""
    return next((code for text, code in _IGNORES.items() if text in reason), "other")
