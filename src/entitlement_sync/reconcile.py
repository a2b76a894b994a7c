"""Use cases: sync customers now, outside the job queue (`sync customer`, `sync all`).

They run in the operator's process, so they retry Stripe's 429/5xx themselves (`with_retries`), and
`sync all` paces every request and keeps a checkpoint after each customer: an interrupted run resumes there.
`sync all` previews each customer (one fetch) and applies that same fetch only once the revoke guard agrees.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from . import store
from .db import SessionFactory, transaction
from .errors import StripeRejected, StripeUnavailable
from .logs import get_logger
from .pacing import with_retries
from .ports import Clock, Pacer, Retry, StripeReader
from .revoke_guard import RevokeGuard
from .sync import Fetched, Syncer, SyncResult

log = get_logger(__name__)

CHECKPOINT = "sync-all"
Progress = Callable[[int, int], None]  # (done, total)


@dataclass
class CustomerChange:
    customer_id: str
    granted: list[str] = field(default_factory=list)  # lookup keys
    revoked: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class Previewed:
    """One customer of `sync all`: the fetch to apply (None in a dry run or after an error) and its diff."""

    change: CustomerChange
    fetched: Fetched | None
    loses_everything: bool


@dataclass
class ReconcileReport:
    dry_run: bool
    customers: int = 0  # in scope for this run (after a resume: those left)
    checked: int = 0
    granted: int = 0
    revoked: int = 0
    errors: int = 0
    changes: list[CustomerChange] = field(default_factory=list)  # customers with a change or an error
    resumed_after: str | None = None
    rate: float | None = None
    shared_pacer: bool = False
    guard: RevokeGuard | None = None  # `sync all`: who would lose everything, and whether the run stopped

    def count(self, change: CustomerChange) -> None:
        self.checked += 1
        self.granted += len(change.granted)
        self.revoked += len(change.revoked)
        self.errors += change.error is not None
        if change.granted or change.revoked or change.error:
            self.changes.append(change)


class Reconciler:
    def __init__(
        self,
        new_session: SessionFactory,
        syncer: Syncer,
        gateway: StripeReader,
        clock: Clock,
        pacer_for: Callable[[float], Pacer],
        retry: Retry[Any] = with_retries,
    ) -> None:
        self._new_session = new_session
        self._syncer = syncer  # the service's own: `sync customer` shares the workers' Stripe budget
        self._gateway = gateway
        self._clock = clock
        self._pacer_for = pacer_for
        self._retry = retry

    def sync_customers(self, customer_ids: Iterable[str], *, dry_run: bool = False) -> ReconcileReport:
        report = ReconcileReport(dry_run=dry_run)
        customer_ids = list(dict.fromkeys(customer_ids))
        report.customers = len(customer_ids)
        for customer_id in customer_ids:
            report.count(self._check(self._syncer, customer_id, dry_run, cause="ops:sync-customer"))
        return report

    def sync_all(
        self,
        *,
        rate: float,
        resume: bool = False,
        dry_run: bool = False,
        guard: RevokeGuard | None = None,
        progress: Progress | None = None,
    ) -> ReconcileReport:
        """Reconcile every customer we know of or Stripe has a subscription for, in id order, paced.

        Stops before applying anything more once the guard says too many customers would lose everything.
        """
        pacer = self._pacer_for(rate)
        gateway = self._gateway.paced(pacer)
        guard = guard or RevokeGuard()
        report = ReconcileReport(dry_run=dry_run, rate=pacer.rate, shared_pacer=pacer.shared, guard=guard)
        after = self._open_checkpoint(resume, dry_run, report)
        customers = [customer for customer in self._all_customers(gateway) if after is None or customer > after]
        report.customers = len(customers)
        self._walk(self._syncer.reading_from(gateway), customers, report, guard, progress)
        if not dry_run and not guard.stopped:
            with transaction(self._new_session) as session:
                store.checkpoints.finish_checkpoint(session, CHECKPOINT, self._clock())
        log.info(
            "sync_all.finished",
            checked=report.checked,
            granted=report.granted,
            revoked=report.revoked,
            errors=report.errors,
            losing_everything=guard.losing_everything,
            stopped=guard.stopped,
            dry_run=dry_run,
        )
        return report

    def _walk(
        self,
        syncer: Syncer,
        customers: list[str],
        report: ReconcileReport,
        guard: RevokeGuard,
        progress: Progress | None,
    ) -> None:
        """Preview each customer; apply the held fetches whenever the guard can judge; stop when it objects."""
        pending: list[Previewed] = []  # previewed, held until the guard can judge them
        for done, customer_id in enumerate(customers, start=1):
            previewed = self._preview(syncer, customer_id, report.dry_run)
            guard.count(previewed.change.error is None, previewed.loses_everything, total=len(customers))
            if report.dry_run:
                report.count(previewed.change)
            elif guard.stopped:
                return  # nothing held is applied: the checkpoint stays before these customers
            else:
                pending.append(previewed)
                if guard.decided:
                    self._apply_all(syncer, pending, report)
            if progress:
                progress(done, len(customers))

    def _preview(self, syncer: Syncer, customer_id: str, dry_run: bool) -> Previewed:
        """One fetch (under a ticket, unless a dry run) and what applying it would change."""
        try:
            fetched: Fetched = self._retry(lambda: syncer.fetch(customer_id, take_ticket=not dry_run))
        except (StripeUnavailable, StripeRejected) as error:
            log.warning("sync.customer_failed", customer=customer_id, error=str(error))
            return Previewed(CustomerChange(customer_id, error=str(error)), None, loses_everything=False)
        with self._new_session() as session:
            held = store.access.entitlements_of(session, customer_id)
        diff = store.access.diff_entitlements(held, fetched.entitlements)
        change = CustomerChange(
            customer_id, [item.lookup_key for item in diff.granted], [row.lookup_key for row in diff.revoked]
        )
        return Previewed(change, None if dry_run else fetched, loses_everything=bool(held) and not fetched.entitlements)

    def _apply_all(self, syncer: Syncer, pending: list[Previewed], report: ReconcileReport) -> None:
        """Apply the held fetches in order, each under its own ticket, and move the checkpoint past each."""
        for previewed in pending:
            change = previewed.change
            if previewed.fetched is not None:
                result = syncer.apply(previewed.fetched, cause="ops:sync-all")
                change = CustomerChange(
                    change.customer_id, [item.lookup_key for item in result.granted], list(result.revoked)
                )
            report.count(change)
            self._advance(change.customer_id, change)
        pending.clear()

    def _all_customers(self, gateway: StripeReader) -> list[str]:
        with self._new_session() as session:
            local = store.subscriptions.local_customer_ids(session)
        in_stripe = self._retry(lambda: set(gateway.list_subscription_customers()))
        return sorted(local | in_stripe)

    def _open_checkpoint(self, resume: bool, dry_run: bool, report: ReconcileReport) -> str | None:
        """Where to start: after the cursor when resuming an unfinished run; else from the top."""
        with transaction(self._new_session) as session:
            checkpoint = store.checkpoints.get_checkpoint(session, CHECKPOINT)
            if resume and checkpoint is not None and checkpoint.finished_at is None:
                report.checked, report.granted = checkpoint.checked, checkpoint.granted
                report.revoked, report.errors = checkpoint.revoked, checkpoint.errors
                report.resumed_after = checkpoint.last_customer_id
                return checkpoint.last_customer_id
            if resume:
                log.info("sync_all.nothing_to_resume")
            if not dry_run:
                store.checkpoints.start_checkpoint(session, CHECKPOINT, self._clock())
            return None

    def _advance(self, customer_id: str, change: CustomerChange) -> None:
        counts = {
            "checked": 1,
            "granted": len(change.granted),
            "revoked": len(change.revoked),
            "errors": int(change.error is not None),
        }
        with transaction(self._new_session) as session:
            store.checkpoints.advance_checkpoint(session, CHECKPOINT, customer_id, counts, self._clock())

    def _check(self, syncer: Syncer, customer_id: str, dry_run: bool, cause: str) -> CustomerChange:
        def once() -> SyncResult:
            if dry_run:
                return syncer.preview_customer(customer_id)
            return syncer.sync_customer(customer_id, cause=cause)

        try:
            result: SyncResult = self._retry(once)
        except (StripeUnavailable, StripeRejected) as error:
            log.warning("sync.customer_failed", customer=customer_id, error=str(error))
            return CustomerChange(customer_id, error=str(error))
        return CustomerChange(customer_id, [item.lookup_key for item in result.granted], list(result.revoked))
