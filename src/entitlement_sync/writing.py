"""Write a customer's rows from Stripe, in the caller's transaction: a fetch, or a complete summary payload, and
only ever a state provably at least as new as the one the rows hold (see `ordering`, docs/design.md)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session

from . import store
from .effective import AccessPolicy, EffectivePlan
from .logs import get_logger
from .ordering import Held, Window, after_applying, may_apply_fetch
from .ports import ActiveEntitlement, Clock, Telemetry
from .store._sql import WithParts

log = get_logger(__name__)


@dataclass(frozen=True)
class SyncResult:
    customer_id: str
    fetched: bool  # False when no call to Stripe was needed (covered already, or written from the payload)
    applied: bool  # False when the rows already held a newer state (or one that leaves this one in doubt)
    granted: list[ActiveEntitlement] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)  # lookup keys
    from_payload: bool = False  # written from a complete summary payload, without a call to Stripe


@dataclass(frozen=True)
class Fetched:
    """A fetch of one customer's entitlements, taken under `ticket`, not yet applied."""

    customer_id: str
    ticket: int
    entitlements: list[ActiveEntitlement]
    started: float  # time.perf_counter() when the fetch began, for telemetry
    window: Window = Window(None, None)  # Stripe's clock of the read


class Writer:
    def __init__(self, policy: AccessPolicy, telemetry: Telemetry, clock: Clock) -> None:
        self._policy = policy
        self._telemetry = telemetry
        self._clock = clock

    def apply_fetch(
        self, session: Session, fetched: Fetched, cause: str | None, also: WithParts | None = None
    ) -> tuple[SyncResult, Held]:
        """Replace the rows with the fetch unless the rows hold a state it may not overwrite; returns the result
        and what the rows hold now. `also`: another store's parts, sent with the write if there is one (`sent`).

        The caller commits right after (its finish, if any, goes in `also`): the write is the transaction's last
        statement, numbers its changes into the feed itself (`store.writes.record_and_replace`'s `last`) and, when
        the policy writes nothing after it, takes the COMMIT along (a round trip less)."""
        customer_id = fetched.customer_id
        # The policy's lock first: waiting for it (a long catalog sync) must not hold the sync-state row,
        # which the receiver needs for every event it stores.
        held, rows, policy_read = store.writes.read_before_write(session, customer_id)
        if not may_apply_fetch(held, fetched.ticket, fetched.window):
            log.info("sync.stale_fetch_dropped", customer=customer_id, ticket=fetched.ticket)
            return SyncResult(customer_id, fetched=True, applied=False), held
        entitlements, window, ticket = fetched.entitlements, fetched.window, fetched.ticket
        return self.write(
            session, customer_id, entitlements, window, held, cause, ticket, rows, policy_read, also, last=True
        )

    def write(
        self,
        session: Session,
        customer_id: str,
        entitlements: Sequence[ActiveEntitlement],
        window: Window,
        held: Held,
        cause: str | None,
        ticket: int = 0,
        rows: Sequence[store.access.HeldRow] | None = None,
        policy_read: store.policy_inputs.PolicyRead | None = None,
        also: WithParts | None = None,
        *,
        last: bool = False,
    ) -> tuple[SyncResult, Held]:
        """Make the rows `entitlements`, a state dated `window` that the caller proved newer than `held`
        (`rows`, `policy_read`: the rows held now and the policy's other inputs, if the caller read them with
        `held`)."""
        now = self._clock()
        after = after_applying(held, window, state_seq=0, ticket=ticket)
        # A fetch's ticket that moved on covers the events stored before it: they need no retry (superseded).
        superseding = after.applied_seq > held.applied_seq
        plan = self._plan_after(customer_id, entitlements, policy_read, cause or "sync", now)
        saved = plan.saved if plan is not None else None
        commit = last and plan is not None and not self._policy.writes_when_recorded(plan)
        state_seq, diff, recorded = store.writes.record_and_replace(
            session,
            customer_id,
            after,
            now,
            entitlements,
            cause,
            rows,
            supersede=superseding,
            effective_saved=saved,
            also=also,
            last=last,
            commit=commit,
        )
        if plan is not None:
            self._policy.recorded(session, plan, recorded)
        else:
            self._policy.recompute(session, customer_id, cause or "sync", now)
        revoked = [row.lookup_key for row in diff.revoked]
        if diff.changed:
            log.info(
                "access.changed",
                customer=customer_id,
                event_id=cause,
                granted=[item.lookup_key for item in diff.granted],
                revoked=revoked,
            )
        result = SyncResult(customer_id, ticket > 0, True, diff.granted, revoked, from_payload=ticket == 0)
        return result, after_applying(held, window, state_seq=state_seq, ticket=ticket)

    def _plan_after(
        self,
        customer_id: str,
        entitlements: Sequence[ActiveEntitlement],
        policy_read: store.policy_inputs.PolicyRead | None,
        cause: str,
        now: datetime,
    ) -> EffectivePlan | None:
        """The recompute after the write, planned before it (and sent with it) when the policy's other inputs were
        read under the lock: the rows are then `entitlements`, one per feature (the last of each, as
        `replace_entitlements` keeps them), and synced. None: the recompute reads for itself, after the write."""
        if policy_read is None:
            return None
        written = {item.feature_id: item for item in entitlements}.values()
        inputs, current = policy_read.with_access(written, synced=True)
        return self._policy.plan(customer_id, inputs, current, cause, now)

    def report(self, result: SyncResult, started: float | None) -> None:
        """Count a committed write (or a dropped fetch)."""
        seconds = time.perf_counter() - started if started is not None else 0.0
        if result.fetched:
            self._telemetry.customer_synced("applied" if result.applied else "dropped", seconds)
        elif result.from_payload:
            self._telemetry.customer_synced("from_payload", seconds)
        if result.applied:
            self._telemetry.access_changed(len(result.granted), len(result.revoked))
