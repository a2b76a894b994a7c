"""Use cases: process a stored event, sync one customer. An event is a signal to go and look at Stripe.

No transaction is held across a call to Stripe: take a ticket, fetch, then apply only if no fetch that
started later has been applied meanwhile. That makes any order, duplication and concurrency converge.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field, replace
from datetime import datetime

from sqlalchemy.orm import Session

from . import store
from .db import SessionFactory, transaction
from .effective import AccessPolicy
from .errors import CustomerNotFound, StorageUnavailable, StripeRejected, StripeUnavailable, WrongStripeAccount
from .events import SUBSCRIPTION_TYPES, SUMMARY_UPDATED, connect_reason, event_from_payload, subscription_snapshot
from .logs import bound, get_logger
from .models import EventStatus, StripeEvent
from .policy import PolicyRules
from .ports import ActiveEntitlement, Clock, CustomerState, EntitlementSource, NoTelemetry, Telemetry, WaitRule
from .store.inbox import Unavailability

log = get_logger(__name__)


@dataclass(frozen=True)
class SyncResult:
    customer_id: str
    fetched: bool  # False when an applied fetch had already seen the event (coalesced)
    applied: bool  # False when a fetch that started later won the race
    granted: list[ActiveEntitlement] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)  # lookup keys


@dataclass(frozen=True)
class Fetched:
    """A fetch of one customer's entitlements, taken under `ticket`, not yet applied."""

    customer_id: str
    ticket: int
    entitlements: list[ActiveEntitlement]
    started: float  # time.perf_counter() when the fetch began, for telemetry


def fetch_entitlements(source: EntitlementSource, customer_id: str) -> list[ActiveEntitlement]:
    """The customer's active entitlements; none only for a customer Stripe reports deleted.

    Stripe answers 404 for a deleted customer and equally for a key of another account or mode. Reading the
    second as "has nothing" would revoke everyone the moment a wrong key is deployed, so ask which it is.
    """
    try:
        return source.list_active_entitlements(customer_id)
    except CustomerNotFound as error:
        state = source.customer_state(customer_id)
        if state is CustomerState.DELETED:
            return []
        if state is CustomerState.UNKNOWN:
            raise WrongStripeAccount(
                f"Stripe has no customer {customer_id} for this STRIPE_API_KEY: the key belongs to another "
                "account or mode (test/live) than the customer's (account/mode mismatch); nothing was revoked. "
                "Check STRIPE_API_KEY (`entitlement-sync doctor`)."
            ) from error
        raise StripeRejected(
            f"Stripe answered 404 for the entitlements of {customer_id}, who exists: {error}"
        ) from error


@dataclass(frozen=True)
class Outcome:
    event_id: str
    status: EventStatus | None  # None: not claimed, because the event is already finished or unknown
    error: str | None = None
    sync: SyncResult | None = None


class Syncer:
    def __init__(
        self,
        new_session: SessionFactory,
        stripe: EntitlementSource,
        clock: Clock,
        wait: WaitRule | None = None,
        telemetry: Telemetry | None = None,
        access_policy: AccessPolicy | None = None,
    ) -> None:
        self._new_session = new_session
        self._wait = wait or WaitRule()
        self._stripe = stripe
        self._clock = clock
        self._telemetry = telemetry or NoTelemetry()
        # Effective access is recomputed in the transaction of every input change, so it never lags them.
        self._policy = access_policy or AccessPolicy(new_session, PolicyRules(), clock)
        self._handlers: dict[str, Callable[[StripeEvent], SyncResult]] = {
            SUMMARY_UPDATED: self._on_summary_event,
            **{event_type: self._on_subscription_event for event_type in SUBSCRIPTION_TYPES},
        }

    def reading_from(self, stripe: EntitlementSource) -> Syncer:
        """The same use case over another source (`sync all`'s paced gateway), with the same access policy."""
        return Syncer(self._new_session, stripe, self._clock, self._wait, self._telemetry, self._policy)

    def sync_customer(
        self, customer_id: str, *, cause: str | None = None, seen_at_seq: int | None = None
    ) -> SyncResult:
        """Fetch the customer's entitlements and replace their rows, unless a newer fetch got there first.

        With `seen_at_seq` (the event's place in the customer's sequence), skip the call to Stripe when an
        applied fetch already started after the event was stored: bursts for one customer coalesce.
        """
        with transaction(self._new_session) as session:
            if seen_at_seq is not None and store.access.applied_seq(session, customer_id) > seen_at_seq:
                self._telemetry.event_coalesced()
                return SyncResult(customer_id, fetched=False, applied=False)
        return self.apply(self.fetch(customer_id), cause=cause)

    def fetch(self, customer_id: str, *, take_ticket: bool = True) -> Fetched:
        """Take a ticket, then fetch: `apply` may write it only if no fetch with a later ticket was applied.

        Without a ticket (a dry run writes nothing, not even the sequence) the fetch can never be applied.
        """
        ticket = 0
        if take_ticket:
            with transaction(self._new_session) as session:
                ticket = store.access.advance_customer_seq(session, customer_id)
        started = time.perf_counter()
        return Fetched(customer_id, ticket, fetch_entitlements(self._stripe, customer_id), started)

    def apply(self, fetched: Fetched, *, cause: str | None = None) -> SyncResult:
        """Replace the customer's rows with a fetch, unless a fetch that started later was applied meanwhile.

        (`sync all` may hold a fetch a while before applying it: its telemetry duration includes the wait.)
        """
        customer_id, ticket, started = fetched.customer_id, fetched.ticket, fetched.started
        with transaction(self._new_session) as session:
            # The policy's lock first: waiting for it (a long catalog sync) must not hold the sync-state row,
            # which the receiver needs for every event it stores.
            store.effective.lock_customer(session, customer_id)
            if not store.access.claim_apply(session, customer_id, ticket, self._clock()):
                log.info("sync.stale_fetch_dropped", customer=customer_id, ticket=ticket)
                self._telemetry.customer_synced("dropped", time.perf_counter() - started)
                return SyncResult(customer_id, fetched=True, applied=False)
            now = self._clock()
            diff = store.access.replace_entitlements(session, customer_id, fetched.entitlements, cause, now)
            store.inbox.supersede_synced(session, now, customer_id)
            self._policy.recompute(session, customer_id, cause or "sync", now)
        revoked = [row.lookup_key for row in diff.revoked]
        self._telemetry.customer_synced("applied", time.perf_counter() - started)
        self._telemetry.access_changed(len(diff.granted), len(revoked))
        if diff.changed:
            log.info(
                "access.changed",
                customer=customer_id,
                event_id=cause,
                granted=[item.lookup_key for item in diff.granted],
                revoked=revoked,
            )
        return SyncResult(customer_id, fetched=True, applied=True, granted=diff.granted, revoked=revoked)

    def preview_customer(self, customer_id: str) -> SyncResult:
        """What a sync would change now, without writing anything: the dry run of `sync_customer`."""
        fetched = fetch_entitlements(self._stripe, customer_id)
        with self._new_session() as session:
            diff = store.access.diff_entitlements(store.access.entitlements_of(session, customer_id), fetched)
        revoked = [row.lookup_key for row in diff.revoked]
        return SyncResult(customer_id, fetched=True, applied=False, granted=diff.granted, revoked=revoked)

    def process_event(self, event_id: str, *, final_attempt: bool = True) -> Outcome:
        """Apply one stored event. Raises StripeUnavailable when a later attempt of the queue may succeed.

        A failure is written to the event's row before anything is raised, so SQL always tells the story.
        """
        with bound(event_id=event_id):
            with transaction(self._new_session) as session:
                claimed = store.inbox.claim_for_processing(session, event_id, self._clock())
            if claimed is None:
                return Outcome(event_id, None)
            event, attempt_id = claimed
            # Back from waiting, an event gets one try per turn: the sweep's growing pauses space its tries now.
            final_attempt = final_attempt or event.waits > 0
            with bound(type=event.type, customer=event.customer_id):
                return self._process(event, attempt_id, final_attempt)

    def _process(self, event: StripeEvent, attempt_id: int, final_attempt: bool) -> Outcome:
        handler = self._handlers.get(event.type)
        reason = _reason_to_skip(event, handler is not None)
        if handler is None or reason:
            return self._finish(event, attempt_id, EventStatus.IGNORED, reason)
        try:
            result = handler(event)
        except StripeUnavailable as error:
            if final_attempt:
                return self._wait_or_fail(event, attempt_id, str(error))
            outcome = self._finish(event, attempt_id, EventStatus.QUEUED, str(error), self._unavailable(event))
            if outcome.status is None:  # overtaken: the attempt that owns the event decides, not our retries
                return outcome
            raise
        except StripeRejected as error:
            return self._finish(event, attempt_id, EventStatus.FAILED, str(error))
        except StorageUnavailable as error:
            # The database, not the event: never `failed` for it, however many tries it took. Left unfinished,
            # the event goes back to a worker through the sweep once the database is back.
            with suppress(StorageUnavailable):
                self._finish(event, attempt_id, EventStatus.QUEUED, f"StorageUnavailable: {error}")
            raise
        except Exception as error:
            # A bug: keep the traceback on the row, and let the queue retry it.
            detail = "".join(traceback.format_exception_only(error)).strip()
            status = EventStatus.FAILED if final_attempt else EventStatus.QUEUED
            self._finish(event, attempt_id, status, f"{detail}\n{traceback.format_exc(limit=8)}")
            raise
        outcome = self._finish(event, attempt_id, EventStatus.PROCESSED, None)
        if outcome.status is not None:
            self._applied(event)
        return replace(outcome, sync=result)

    def _unavailable(self, event: StripeEvent, retry_at: datetime | None = None) -> Unavailability:
        since = event.unavailable_since or self._clock()
        return Unavailability(since, event.waits + (retry_at is not None), retry_at)

    def _wait_or_fail(self, event: StripeEvent, attempt_id: int, error: str) -> Outcome:
        """Stripe is unavailable and the queue's retries are spent: wait for the sweep, with a pause that
        doubles each time, until Stripe has been unavailable for this event longer than the window."""
        now = self._clock()
        since = event.unavailable_since or now
        if now - since >= self._wait.give_up_after:
            error = (
                f"{error} (Stripe unavailable since {since:%Y-%m-%d %H:%M:%S} UTC: past RETRY_UNAVAILABLE_FOR_SECONDS)"
            )
            return self._finish(event, attempt_id, EventStatus.FAILED, error, self._unavailable(event))
        retry_at = now + self._wait.pause(event.waits)
        unavailable = self._unavailable(event, retry_at)
        return self._finish(event, attempt_id, EventStatus.WAITING, error, unavailable, now)

    def _applied(self, event: StripeEvent) -> None:
        # The table now holds a state at least as new as the event, whether this job fetched it or an
        # earlier fetch covered it (coalesced): that is when the event's change counts as applied.
        now = self._clock()
        self._telemetry.change_applied(now.timestamp() - event.created, (now - event.received_at).total_seconds())

    def _on_summary_event(self, event: StripeEvent) -> SyncResult:
        assert event.customer_id is not None  # checked before dispatch
        return self.sync_customer(event.customer_id, cause=event.id, seen_at_seq=event.customer_seq)

    def _on_subscription_event(self, event: StripeEvent) -> SyncResult:
        # The summary event does not fire for every change (a trial ending into `paused`), so subscription
        # events trigger a sync as well as keeping the mirror.
        try:
            self._mirror_subscription(event)
        except StorageUnavailable:
            raise  # the database is down: the sync could not write either; the event waits for it
        except Exception:
            # The mirror is context for ops, the access table is the contract: an odd payload (a field of a
            # shape we did not foresee) or a row the mirror cannot write must never hold access back.
            log.exception("subscription.mirror_failed", event_id=event.id, customer=event.customer_id)
        return self._on_summary_event(event)

    def _mirror_subscription(self, event: StripeEvent) -> None:
        inbound = event_from_payload(event.payload)
        snapshot = subscription_snapshot(inbound.data_object, event.customer_id or "")
        with transaction(self._new_session) as session:
            if store.subscriptions.upsert_subscription(session, snapshot, inbound.created, inbound.id, self._clock()):
                self._policy.recompute(session, snapshot.customer_id, inbound.id)

    def _finish(
        self,
        event: StripeEvent,
        attempt_id: int,
        status: EventStatus,
        error: str | None,
        unavailable: Unavailability | None = None,
        now: datetime | None = None,
    ) -> Outcome:
        now = now or self._clock()
        with transaction(self._new_session) as session:
            if status in (EventStatus.FAILED, EventStatus.WAITING) and _seen_by_applied_fetch(session, event):
                status = EventStatus.SUPERSEDED  # a later fetch was applied while this attempt ran
            owned = store.inbox.finish_attempt(
                session, event.id, attempt_id, status, error, now, unavailable=unavailable
            )
        first_line = (error or "").split("\n")[0] or None
        if not owned:
            log.info("event.overtaken", event_id=event.id, status=status, error=first_line)
            return Outcome(event.id, None, error)
        outcome = "retrying" if status == EventStatus.QUEUED else str(status)
        self._telemetry.event_finished(event.type, outcome)
        log.info("event.finished", event_id=event.id, status=status, outcome=outcome, error=first_line)
        return Outcome(event.id, status, error)


def _seen_by_applied_fetch(session: Session, event: StripeEvent) -> bool:
    """True when a fetch that started after the event was stored has been applied: its effect is in the table.

    (A fetch applied concurrently with this check is caught by the sweep's `supersede_synced` pass.)
    """
    if event.customer_id is None or event.customer_seq is None:
        return False
    return store.access.applied_seq(session, event.customer_id) > event.customer_seq


def _reason_to_skip(event: StripeEvent, handled: bool) -> str | None:
    if not handled:
        return f"event type {event.type} is not handled"
    if event.customer_id is None:
        return "event names no customer"
    # An event stored before Connect events were ignored on receipt must not reach a platform customer either.
    account = event.payload.get("account") if isinstance(event.payload, dict) else None
    return connect_reason(account)
