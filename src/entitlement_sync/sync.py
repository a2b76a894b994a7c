"""Use cases: process a stored event, sync one customer. An event is a signal to go and look at Stripe.

No transaction is held across a call to Stripe: take a ticket, fetch, then apply only if no fetch that
started later has been applied meanwhile. That makes any order, duplication and concurrency converge.
"""

from __future__ import annotations

import time
import traceback
from contextlib import suppress
from dataclasses import replace

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from . import errors, store
from .db import SessionFactory, transaction
from .effective import AccessPolicy
from .errors import CustomerNotFound, StorageUnavailable, StripeRejected, StripeUnavailable, WrongStripeAccount
from .events import (
    HANDLED_TYPES,
    SUBSCRIPTION_TYPES,
    complete_entitlements,
    connect_reason,
    event_from_payload,
    subscription_snapshot,
)
from .finishing import Finisher, Outcome
from .logs import bound, get_logger
from .models import EventStatus, StripeEvent
from .ordering import Held, Verdict, Window, judge_event
from .policy import PolicyRules
from .ports import Clock, CustomerState, EntitlementSource, EntitlementsRead, NoTelemetry, Telemetry, WaitRule
from .store._sql import WithParts
from .writing import Fetched, SyncResult, Writer

__all__ = ["Fetched", "Outcome", "SyncResult", "Syncer", "fetch_entitlements"]

log = get_logger(__name__)


def fetch_entitlements(source: EntitlementSource, customer_id: str) -> EntitlementsRead:
    """The customer's active entitlements; none only for a customer Stripe reports deleted.

    Stripe answers 404 for a deleted customer and equally for a key of another account or mode. Reading the
    second as "has nothing" would revoke everyone the moment a wrong key is deployed, so ask which it is.
    """
    try:
        return source.read_active_entitlements(customer_id)
    except CustomerNotFound as error:
        state = source.customer_state(customer_id)
        if state is CustomerState.DELETED:
            return EntitlementsRead([])  # of unknown date: a payload after it is in doubt, and fetched
        if state is CustomerState.UNKNOWN:
            raise WrongStripeAccount(
                f"Stripe has no customer {customer_id} for this STRIPE_API_KEY: the key belongs to another "
                "account or mode (test/live) than the customer's (account/mode mismatch); nothing was revoked. "
                "Check STRIPE_API_KEY (`entitlement-sync doctor`)."
            ) from error
        raise StripeRejected(
            f"Stripe answered 404 for the entitlements of {customer_id}, who exists: {error}"
        ) from error


# A fetch that a state written meanwhile leaves in doubt is taken again; this many times at most, then the
# event goes back to the queue (a customer whose state changes faster than a round trip, for a while).
MAX_FETCHES_PER_ATTEMPT = 3


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
        self._writer = Writer(self._policy, self._telemetry, clock)
        self._finisher = Finisher(new_session, clock, self._wait, self._telemetry)

    def reading_from(self, stripe: EntitlementSource) -> Syncer:
        """The same use case over another source (`sync all`'s paced gateway), with the same access policy."""
        return Syncer(self._new_session, stripe, self._clock, self._wait, self._telemetry, self._policy)

    def sync_customer(self, customer_id: str, *, cause: str | None = None) -> SyncResult:
        """Fetch the customer's entitlements and replace their rows, unless a newer state got there first. A
        fetch left in doubt by a state written while it ran is taken again (a few times at most)."""
        for _ in range(MAX_FETCHES_PER_ATTEMPT):
            fetched = self.fetch(customer_id)
            with transaction(self._new_session) as session:
                result, held = self._writer.apply_fetch(session, fetched, cause)
            self._writer.report(result, fetched.started)
            if result.applied or held.applied_seq >= fetched.ticket:  # applied, or a later fetch was
                return result
        return result

    def fetch(self, customer_id: str, *, take_ticket: bool = True) -> Fetched:
        """Take a ticket, then fetch: `apply` may write it only if no newer state was written meanwhile.

        Without a ticket (a dry run writes nothing, not even the sequence) the fetch can never be applied.
        """
        ticket = 0
        if take_ticket:
            with transaction(self._new_session) as session:
                ticket = store.sync_state.advance_customer_seq(session, customer_id, last=True)
        return self._read(customer_id, ticket)

    def _read(self, customer_id: str, ticket: int) -> Fetched:
        started = time.perf_counter()
        read = fetch_entitlements(self._stripe, customer_id)
        return Fetched(customer_id, ticket, read.entitlements, started, read.window)

    def apply(self, fetched: Fetched, *, cause: str | None = None) -> SyncResult:
        """Replace the customer's rows with a fetch, unless a newer state was written meanwhile.

        (`sync all` may hold a fetch a while before applying it: its telemetry duration includes the wait.)
        """
        with transaction(self._new_session) as session:
            result, _ = self._writer.apply_fetch(session, fetched, cause)
        self._writer.report(result, fetched.started)
        return result

    def preview_customer(self, customer_id: str) -> SyncResult:
        """What a sync would change now, without writing anything: the dry run of `sync_customer`."""
        fetched = fetch_entitlements(self._stripe, customer_id).entitlements
        with self._new_session() as session:
            diff = store.access.diff_entitlements(store.access.entitlements_of(session, customer_id), fetched)
        revoked = [row.lookup_key for row in diff.revoked]
        return SyncResult(customer_id, fetched=True, applied=False, granted=diff.granted, revoked=revoked)

    def process_event(self, event_id: str, *, final_attempt: bool = True, customer_id: str | None = None) -> Outcome:
        """Apply one stored event. Raises StripeUnavailable when a later attempt of the queue may succeed.

        At most two commits: the claim (with the whole outcome when no call to Stripe is needed, else the
        fetch's ticket), then the fetch's apply with the event's finish. A failure is written to the event's
        row before anything is raised, so SQL always tells the story. `customer_id`: the event's customer as its
        job names it, else None: it spares a lookup, and is checked against the claimed row.
        """
        with bound(event_id=event_id):
            try:
                try:
                    with transaction(self._new_session) as session:
                        first = self._claim_and_begin(session, event_id, customer_id)
                except errors.MisnamedCustomer:  # rolled back: claim it again under the stored customer's lock
                    with transaction(self._new_session) as session:
                        first = self._claim_and_begin(session, event_id, None)
            except StorageUnavailable:
                raise  # nothing was claimed: the queue (or the sweep) hands the event over again
            except Exception as error:
                return self._record_bug(event_id, error, final_attempt)
            if isinstance(first, Outcome):
                return self._finisher.reported(first)
            event, attempt_id, ticket = first
            # Back from waiting, an event gets one try per turn: the sweep's growing pauses space its tries now.
            final_attempt = final_attempt or event.waits > 0
            with bound(type=event.type, customer=event.customer_id):
                return self._fetch_and_finish(event, attempt_id, ticket, final_attempt)

    def _claim_and_begin(
        self, session: Session, event_id: str, named_by_job: str | None
    ) -> Outcome | tuple[StripeEvent, int, int]:
        """The first transaction: claim the event, then finish it when the rows already hold its change or its
        payload may be written; else take a fetch ticket. Returns the outcome, or (event, attempt, ticket)."""
        customer_id = named_by_job if named_by_job is not None else store.inbox.customer_of(session, event_id)
        # The customer's lock first, as every writer of their rows takes it (sent with the claim: one round trip).
        claimed = store.attempts.claim_with_held(session, event_id, self._clock(), lock_first=customer_id)
        if claimed is None:
            return Outcome(event_id, None)
        event, attempt_id = claimed.event, claimed.attempt_id
        if event.customer_id != customer_id:  # a job that misnames it: never hold another customer's lock instead
            raise errors.MisnamedCustomer(event_id)
        reason = _reason_to_skip(event, event.type in HANDLED_TYPES)
        if reason or customer_id is None:
            return self._finisher.finish_in(session, event, attempt_id, EventStatus.IGNORED, reason, last=True)
        if event.type in SUBSCRIPTION_TYPES:
            self._mirror_subscription(session, event)  # writes no sync state nor rows: `claimed` stays true
        # Each way out sends one statement more, the last: a payload's write (the finish with it), the finish, or
        # the fetch's ticket. Each may take the COMMIT along.
        finish = self._finisher.processed_with_write(session, event, attempt_id)
        result = self._without_fetch(session, event, claimed.held, claimed.rows, claimed.policy_read, finish)
        if result is None:  # a fetch: its ticket was taken with the claim, or is taken now (and takes the COMMIT)
            ticket = claimed.ticket or store.sync_state.advance_customer_seq(session, customer_id, last=True)
            return event, attempt_id, ticket
        if finish is not None and finish.sent:
            return replace(self._finisher.outcome_of(finish, event), sync=result)
        outcome = self._finisher.finish_in(session, event, attempt_id, EventStatus.PROCESSED, None, last=True)
        return replace(outcome, sync=result)

    def _without_fetch(
        self,
        session: Session,
        event: StripeEvent,
        held: Held,
        rows: list[store.access.HeldRow] | None = None,
        policy_read: store.policy_inputs.PolicyRead | None = None,
        finish: WithParts | None = None,
    ) -> SyncResult | None:
        """The event's outcome when no call to Stripe is needed (already covered, or its complete payload is
        provably newer than the rows: written now); None when only a fetch can tell. `rows`, `policy_read`: the
        rows held and the policy's other inputs, if read with `held`. `finish`: the event's finish, sent with
        the payload's write as the transaction's last statement (`sent` says whether it went)."""
        assert event.customer_id is not None
        complete = complete_entitlements(event.type, event.payload)
        verdict = judge_event(held, seq=event.customer_seq, created=event.created, complete=complete is not None)
        if verdict is Verdict.COVERED:
            self._telemetry.event_coalesced()
            return SyncResult(event.customer_id, fetched=False, applied=False)
        if verdict is Verdict.APPLY and complete is not None:
            window, customer_id = Window.of_payload(event.created), event.customer_id
            written, _ = self._writer.write(
                session,
                customer_id,
                complete,
                window,
                held,
                event.id,
                0,
                rows,
                policy_read,
                finish,
                last=finish is not None,
            )
            self._writer.report(written, None)
            return written
        return None

    def _fetch_and_finish(self, event: StripeEvent, attempt_id: int, ticket: int, final_attempt: bool) -> Outcome:
        try:
            return self._fetch_until_settled(event, attempt_id, ticket)
        except StripeUnavailable as error:
            if final_attempt:
                return self._finisher.wait_or_fail(event, attempt_id, str(error))
            outcome = self._finisher.finish(
                event, attempt_id, EventStatus.QUEUED, str(error), self._finisher.unavailable(event)
            )
            if outcome.status is None:  # overtaken: the attempt that owns the event decides, not our retries
                return outcome
            raise
        except StripeRejected as error:
            return self._finisher.finish(event, attempt_id, EventStatus.FAILED, str(error))
        except StorageUnavailable as error:
            # The database, not the event: never `failed` for it, however many tries it took. Left unfinished,
            # the event goes back to a worker through the sweep once the database is back.
            with suppress(StorageUnavailable):
                self._finisher.finish(event, attempt_id, EventStatus.QUEUED, f"StorageUnavailable: {error}")
            raise
        except Exception as error:
            # A bug: keep the traceback on the row, and let the queue retry it.
            detail = "".join(traceback.format_exception_only(error)).strip()
            status = EventStatus.FAILED if final_attempt else EventStatus.QUEUED
            self._finisher.finish(event, attempt_id, status, f"{detail}\n{traceback.format_exc(limit=8)}")
            raise

    def _fetch_until_settled(self, event: StripeEvent, attempt_id: int, ticket: int) -> Outcome:
        """Fetch, then in one transaction apply the fetch (if no newer state was written meanwhile) and finish
        the event. A fetch left in doubt that does not cover the event is taken again under a new ticket."""
        assert event.customer_id is not None
        for _ in range(MAX_FETCHES_PER_ATTEMPT):
            fetched = self._read(event.customer_id, ticket)
            outcome: Outcome | None = None
            with transaction(self._new_session) as session:
                finish = self._finisher.processed_with_write(session, event, attempt_id)  # sent with the write
                applied, held = self._writer.apply_fetch(session, fetched, event.id, also=finish)
                result = applied if applied.applied else self._without_fetch(session, event, held)
                if finish is not None and finish.sent:
                    outcome = self._finisher.outcome_of(finish, event)
                elif result is not None:
                    outcome = self._finisher.finish_in(
                        session, event, attempt_id, EventStatus.PROCESSED, None, last=True
                    )
                else:  # in doubt, and the event not covered: fetch again, after what is held now
                    ticket = store.sync_state.advance_customer_seq(session, event.customer_id, last=True)
            self._writer.report(applied, fetched.started)
            if outcome is not None:
                return self._finisher.reported(replace(outcome, sync=result))
        raise StripeUnavailable(f"the state of {event.customer_id} kept changing while it was fetched; trying later")

    def _record_bug(self, event_id: str, error: Exception, final_attempt: bool) -> Outcome:
        """The first transaction failed on a bug and was rolled back: claim the event on its own to keep the
        traceback on its row, then raise for the queue's retry."""
        detail = "".join(traceback.format_exception_only(error)).strip()
        with transaction(self._new_session) as session:
            claimed = store.attempts.claim_for_processing(session, event_id, self._clock())
        if claimed is not None:
            event, attempt_id = claimed
            status = EventStatus.FAILED if final_attempt or event.waits > 0 else EventStatus.QUEUED
            self._finisher.finish(event, attempt_id, status, f"{detail}\n{traceback.format_exc(limit=8)}")
        raise error

    def _mirror_subscription(self, session: Session, event: StripeEvent) -> None:
        # The summary event does not fire for every change (a trial ending into `paused`), so subscription
        # events trigger a sync as well as keeping the mirror. The mirror is context for ops, the access table
        # is the contract: an odd payload or a row the mirror cannot write must never hold access back, so it
        # is written in a savepoint of its own.
        try:
            inbound = event_from_payload(event.payload)
            snapshot = subscription_snapshot(inbound.data_object, event.customer_id or "")
            now = self._clock()
            with store.subscriptions.mirrored(session, snapshot, inbound.created, inbound.id, now) as mirror:
                if mirror.written:
                    self._policy.recompute(session, snapshot.customer_id, inbound.id, now, mirror.read)
        except (StorageUnavailable, OperationalError, InterfaceError):
            raise  # the database is down: the sync could not write either; the event waits for it
        except Exception:
            log.exception("subscription.mirror_failed", event_id=event.id, customer=event.customer_id)


def _reason_to_skip(event: StripeEvent, handled: bool) -> str | None:
    if not handled:
        return f"event type {event.type} is not handled"
    if event.customer_id is None:
        return "event names no customer"
    # An event stored before Connect events were ignored on receipt must not reach a platform customer either.
    account = event.payload.get("account") if isinstance(event.payload, dict) else None
    return connect_reason(account)
