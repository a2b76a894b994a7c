"""Use case: accept a webhook. Verify, store, answer; never call Stripe here, so Stripe hears back in milliseconds."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from . import store
from .db import SessionFactory, transaction
from .errors import QueueUnavailable
from .events import HANDLED_TYPES, InboundEvent, connect_reason, parse_event
from .logs import get_logger
from .models import EventStatus
from .ports import Clock, JobQueue, WebhookVerifier

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
    ) -> None:
        self._new_session = new_session
        self._verifier = verifier
        self._queue = queue
        self._clock = clock
        self._livemode = livemode

    def accept_webhook(self, body: bytes, signature: str | None) -> Acceptance:
        """Raises InvalidWebhook (nothing stored) or StorageUnavailable (Stripe should retry)."""
        self._verifier.verify(body, signature)
        return self.accept_event(parse_event(body))

    def accept_event(self, event: InboundEvent) -> Acceptance:
        """Store first, commit, then enqueue: a job must never run before its event is visible."""
        reason = self.reason_to_ignore(event)
        now = self._clock()
        with transaction(self._new_session) as session:
            status = EventStatus.IGNORED if reason else EventStatus.RECEIVED
            stored = store.inbox.insert_event_if_new(session, event, status, reason, now)
            if stored and not reason and event.customer_id:
                store.inbox.set_customer_seq(
                    session, event.id, store.access.advance_customer_seq(session, event.customer_id)
                )
        if not stored:
            log.info("webhook.duplicate", event_id=event.id, type=event.type)
            return Acceptance(Verdict.DUPLICATE, event.id)
        if reason:
            log.info("webhook.ignored", event_id=event.id, type=event.type, reason=reason)
            return Acceptance(Verdict.IGNORED, event.id, reason)
        queued = self.enqueue(event.id)
        log.info("webhook.accepted", event_id=event.id, type=event.type, customer=event.customer_id, queued=queued)
        return Acceptance(Verdict.ACCEPTED, event.id, queued=queued)

    def enqueue(self, event_id: str) -> bool:
        try:
            self._queue.enqueue_event(event_id)
        except QueueUnavailable as error:
            # The event is committed: the worker's sweep enqueues it once the broker is back.
            log.warning("queue.unavailable", event_id=event_id, error=str(error))
            return False
        with transaction(self._new_session) as session:
            # Only from received: a fast worker may already have moved it on.
            store.inbox.set_status(
                session, event_id, EventStatus.QUEUED, self._clock(), only_from=[EventStatus.RECEIVED]
            )
        return True

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
