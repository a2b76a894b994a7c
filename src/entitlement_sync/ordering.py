"""Ordering by Stripe's clock: pure decisions (no I/O) on what the access table may be given. See docs/design.md.

A state of a customer's entitlements is Stripe's state as of some instant τ that we never know exactly, only
within a window of Stripe's seconds: `Window(start, end)` says start ≤ τ < end.

- A summary event's payload is the state right after its change: τ ∈ [created, created + 1).
- A fetch read the state while Stripe handled our request; the response's `Date` (second resolution) was
  stamped during that same handling, and the whole handling fits in the round trip we timed. So the read
  happened within `rtt` of the Date: τ ∈ [Date - rtt, Date + 1 + rtt), rounded outwards to whole seconds.

The table's rows only ever move to a state that is provably at least as new as the one they hold (by
Stripe's clock, or causally: the fetch started after the held state was written), so τ never goes back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True)
class Window:
    """Stripe's clock of one state: start ≤ τ < end, in Stripe's unix seconds; None where it is not known."""

    start: int | None  # None: no lower bound (covers nothing by the clock)
    end: int | None  # None: no upper bound (nothing is provably newer)

    @staticmethod
    def of_payload(created: int) -> Window:
        return Window(created, created + 1)

    @staticmethod
    def of_read(first: Stamp | None, last: Stamp | None) -> Window:
        """A fetch of one page or several: from the first page's Date, until the last page's."""
        if first is None or last is None:
            return UNKNOWN
        return Window(first.date - math.ceil(first.rtt), last.date + 1 + math.ceil(last.rtt))


UNKNOWN = Window(None, None)


@dataclass(frozen=True)
class Stamp:
    """One response of Stripe: its `Date` (unix seconds) and the round trip we timed around it (seconds)."""

    date: int
    rtt: float


@dataclass(frozen=True)
class Held:
    """What the customer's rows hold, as `customer_sync_state` says."""

    written: bool  # the rows were ever written from Stripe (a fetch or a payload); False: nothing held yet
    applied_seq: int  # the ticket of the latest applied fetch: every event stored before it is covered
    state_seq: int  # the customer's sequence when the rows were last written
    window: Window  # Stripe's clock of the state the rows hold

    def covers_changes_before(self, created: int) -> bool:
        """True when every change Stripe made before second `created` + 1 is in the rows."""
        return self.window.start is not None and created + 1 <= self.window.start

    def is_older_than(self, start: int | None) -> bool:
        """True when a state known to be as of `start` or later is provably newer than the held one."""
        if not self.written:
            return True  # nothing held yet: any state of Stripe's is newer
        return start is not None and self.window.end is not None and start >= self.window.end


NOTHING_HELD = Held(written=False, applied_seq=0, state_seq=0, window=UNKNOWN)


class Verdict(StrEnum):
    COVERED = "covered"  # the rows already hold the event's change: finish it, no call to Stripe
    APPLY = "apply"  # the payload is complete and provably newer than the rows: write it, no call
    FETCH = "fetch"  # in doubt (equal seconds, incomplete payload, unknown clock): ask Stripe


def judge_event(held: Held, *, seq: int | None, created: int, complete: bool) -> Verdict:
    """What an event needs, given what the rows hold.

    `seq` is the event's place in the customer's sequence (None: unknown), `created` Stripe's second of its
    change, `complete` whether its payload is the customer's whole set (`has_more: false`).
    """
    if seq is not None and held.applied_seq > seq:
        return Verdict.COVERED  # a fetch that started after the event was stored has been applied
    if held.covers_changes_before(created):
        return Verdict.COVERED  # the rows hold a state after the event's change, by Stripe's clock
    if complete and held.is_older_than(created):
        return Verdict.APPLY
    return Verdict.FETCH


def may_apply_fetch(held: Held, ticket: int, window: Window) -> bool:
    """May a fetch taken under `ticket`, whose read is dated `window`, replace the rows?

    Yes when its ticket was taken after the rows were last written (its read came after the held state
    existed: causally newer), or when Stripe's clock proves it newer. Never for a fetch without a ticket.
    """
    if ticket <= 0:
        return False
    return ticket > held.state_seq or (window.start is not None and held.is_older_than(window.start))


def after_applying(held: Held, window: Window, *, state_seq: int, ticket: int = 0) -> Held:
    """The held state once a state dated `window` is written (only ever a provably newer one): its lower
    bound never goes back, its upper bound is the new state's."""
    starts = [start for start in (held.window.start, window.start) if start is not None]
    return Held(
        written=True,
        applied_seq=max(held.applied_seq, ticket),
        state_seq=state_seq,
        window=Window(max(starts) if starts else None, window.end),
    )
