"""The Stripe budget's rule: a log of admissions (a sliding window), and the pacer that keeps it in one process.

The budget: in any one-second window, at most N requests reach Stripe, across every process that shares it.
Each request takes a moment in a log of admissions (a sliding window) and leaves at that moment: the moment is
the earliest at which fewer than N of the log's moments lie within the window before it. The window is a
little longer than a second (`MARGIN_SECONDS`): a request reaches Stripe a moment after its admission, and that
delay varies (a thread scheduled late, a busy process, the network); N per window keeps any one second at
Stripe within N as long as the delays of two requests differ by less than the margin. The gateway asks for the
moment at the last step before the request is written (`stripe_http.PacedHttpClient`), so that the delay
is only the write and the network. A request that wakes up later than half the margin after its moment takes a
new one rather than go late.
"""

from __future__ import annotations

import math
import threading
import time
from bisect import bisect_right, insort
from collections.abc import Callable
from dataclasses import dataclass

from .logs import get_logger

log = get_logger(__name__)

# 0.1 s was measured too little: on a loaded 2-core host, 8 worker threads' requests reached the simulated
# Stripe up to 0.16 s apart from their moments, and one CI run saw 11 calls in a second against a budget of 10.
MARGIN_SECONDS = 0.2
# A request woken this late after its moment takes another: its delay must stay within the margin.
LATE_SECONDS = MARGIN_SECONDS / 2
# After that many late wake-ups in a row the request goes anyway (said in the log): a process that late is
# overloaded, and a request that never leaves is worse than one over the budget.
LATE_RETRIES = 8
# Moments are kept this long (the longest window: 1 request per 11 s at the lowest `--rate`, 0.1).
HORIZON_SECONDS = 60.0


@dataclass(frozen=True)
class Budget:
    """At most `limit` admissions within any `window` seconds."""

    limit: int
    window: float

    @classmethod
    def per_second(cls, rate: float) -> Budget:
        """`rate` requests a second, counted over a second and the margin (1 per 1/rate s below 1/s)."""
        limit = max(1, math.floor(rate))
        return cls(limit, (1.0 + MARGIN_SECONDS) * max(1.0, limit / rate))

    def share(self, parts: int) -> Budget:
        """One of `parts` equal shares: together they never exceed this budget."""
        if self.limit >= parts:
            return Budget(self.limit // parts, self.window)
        return Budget(1, self.window * parts / self.limit)


class AdmissionLog:
    """The moments admitted, in order, and the rule (the Redis script's twin, for one process)."""

    def __init__(self) -> None:
        self._moments: list[float] = []
        self._not_before = -math.inf

    def admit(self, now: float, budget: Budget) -> float:
        """Take the earliest moment, not before now nor before any moment taken, with fewer than
        `budget.limit` moments in the window before it; return it."""
        moments = self._moments
        del moments[: bisect_right(moments, now - HORIZON_SECONDS)]
        slot = max(now, self._not_before, moments[-1] if moments else now)
        if len(moments) >= budget.limit:
            slot = max(slot, moments[-budget.limit] + budget.window)
        moments.append(slot)
        return slot

    def record(self, moment: float) -> None:
        """A request admitted elsewhere (through Redis) at this moment of this log's clock."""
        insort(self._moments, moment)

    def hold_until(self, moment: float) -> None:
        """Admit nothing before `moment`."""
        self._not_before = max(self._not_before, moment)

    def since(self, moment: float) -> list[float]:
        return [m for m in self._moments if m > moment]


class LocalPacer:
    """The budget kept by this process alone (no Redis configured or reachable)."""

    shared = False

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        *,
        budget: Budget | None = None,
    ) -> None:
        self.rate = rate
        self.budget = budget or Budget.per_second(rate)
        self._clock, self._sleep = clock, sleep
        self._log = AdmissionLog()
        self._lock = threading.Lock()

    def __call__(self) -> None:
        for attempt in range(LATE_RETRIES + 1):
            with self._lock:
                now = self._clock()
                slot = self._log.admit(now, self.budget)
            if slot > now:
                self._sleep(slot - now)
            if on_time(self._clock() - slot, attempt):
                return

    def record(self, moment: float) -> None:
        with self._lock:
            self._log.record(moment)

    def hold_until(self, moment: float) -> None:
        with self._lock:
            self._log.hold_until(moment)

    def admitted_since(self, moment: float) -> list[float]:
        with self._lock:
            return self._log.since(moment)


def on_time(late: float, attempt: int) -> bool:
    """Whether a request woken `late` seconds after its moment may go (the last attempt goes anyway)."""
    if late <= LATE_SECONDS:
        return True
    if attempt < LATE_RETRIES:
        return False
    log.warning("pacer.went_late", late_seconds=round(late, 3), wakeups=attempt + 1)
    return True
