"""Keeping every call to Stripe within its budget, and retrying what Stripe asks us to retry.

The budget: in any one-second window, at most N requests reach Stripe, across every process that shares it.
Each request takes a moment in a log of admissions (a sliding window) and leaves at that moment: the moment is
the earliest at which fewer than N of the log's moments lie within the window before it. The window is a
little longer than a second (`MARGIN_SECONDS`): a request reaches Stripe a moment after its admission, and that
delay varies (a thread scheduled late, a busy process, the network); N per window keeps any one second at
Stripe within N as long as the delays of two requests differ by less than the margin. The gateway asks for the
moment at the last step before the request is written (`stripe_gateway._PacedHttpClient`), so that the delay
is only the write and the network. A request that wakes up later than half the margin after its moment takes a
new one rather than go late.

The log lives in Redis when it is reachable (one script call per request, on Redis's clock, so that every
process and machine agrees); otherwise in this process, with the same rule. See `RedisPacer` for the switch.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
import uuid
from bisect import bisect_right, insort
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import redis

from .breaker import CircuitBreaker
from .errors import StripeUnavailable
from .logs import get_logger
from .ports import Pacer
from .redis_client import redis_client

log = get_logger(__name__)
T = TypeVar("T")

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


# The log's rule on Redis's clock. KEYS[1]: a sorted set of admitted moments. ARGV: limit, window, a member
# unique to this request, then moments this process admitted on its own while Redis was away (seconds before
# now; negative: still ahead). Returns how long to wait for the moment taken, in seconds.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.6f', now - HORIZON))
for i = 4, #ARGV do
  redis.call('ZADD', KEYS[1], string.format('%.6f', now - tonumber(ARGV[i])), ARGV[3] .. ':' .. i)
end
local slot = now
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] then slot = math.max(slot, tonumber(last[2])) end
if redis.call('ZCARD', KEYS[1]) >= limit then
  local edge = redis.call('ZRANGE', KEYS[1], -limit, -limit, 'WITHSCORES')
  slot = math.max(slot, tonumber(edge[2]) + window)
end
redis.call('ZADD', KEYS[1], string.format('%.6f', slot), ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.ceil((slot - now + HORIZON) * 1000))
return string.format('%.6f', slot - now)
""".replace("HORIZON", f"{HORIZON_SECONDS:.1f}")


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
            if _on_time(self._clock() - slot, attempt):
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


class RedisPacer:
    """The budget shared through Redis by every process and machine configured with the same key.

    Should Redis go away, each process keeps a share of the budget on its own (`fallback_share`: how many
    processes may be sending), after waiting one window: what they were all admitted through Redis just before
    must leave the window first. Every moment Redis gives is also noted in the local log, so neither pause nor
    share is needed by this process's own requests. When Redis answers again, the first request hands it the
    moments admitted locally meanwhile, and the process keeps to its share for a while (the breaker's pause and
    a window): the others may still be sending on their own until their breakers let them try Redis again.
    """

    shared = True

    def __init__(
        self,
        client: redis.Redis,
        key: str,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        *,
        breaker: CircuitBreaker | None = None,
        fallback_share: int = 1,
    ) -> None:
        self.rate = rate
        self._budget = Budget.per_second(rate)
        self._key = key
        self._admit = client.register_script(_ADMIT)
        self._clock, self._sleep = clock, sleep
        self._fallback = LocalPacer(rate, clock, sleep, budget=self._budget.share(fallback_share))
        # A Redis that hangs would cost every Stripe call its socket timeout: after one, skip Redis a while.
        self._breaker = breaker or CircuitBreaker(5.0)
        self._token, self._count = uuid.uuid4().hex[:12], itertools.count()
        self._lock = threading.Lock()
        self._on_redis = True
        self._shared_from = -math.inf  # until then, keep to this process's share (just back from the fallback)

    def __call__(self) -> None:
        for attempt in range(LATE_RETRIES + 1):
            asked = self._clock()
            wait = self._reserve(asked)
            if wait is None:
                self._fallback()
                return
            if wait > 0:
                self._sleep(wait)
            if _on_time(self._clock() - (asked + wait), attempt):
                return

    def _reserve(self, asked: float) -> float | None:
        """Wait this long for the moment Redis gave; None: Redis is away, pace in this process."""
        if not self._breaker.allows():
            return None
        budget, seeds = self._terms(asked)
        member = f"{self._token}:{next(self._count)}"
        try:
            wait = float(self._admit(keys=[self._key], args=[budget.limit, f"{budget.window:.6f}", member, *seeds]))
        except (redis.RedisError, OSError):
            self._breaker.failed()
            self._went_away()
            return None
        self._breaker.succeeded()
        self._came_back(asked)
        self._fallback.record(asked + wait)
        return wait

    def _terms(self, asked: float) -> tuple[Budget, list[str]]:
        """The budget to ask for, and the moments to hand over when coming back from the fallback."""
        with self._lock:
            if self._on_redis:
                return (self._budget if asked >= self._shared_from else self._fallback.budget), []
        recent = self._fallback.admitted_since(asked - self._budget.window)
        return self._fallback.budget, [f"{asked - moment:.6f}" for moment in recent]

    def _went_away(self) -> None:
        with self._lock:
            if not self._on_redis:
                return
            self._on_redis = False
        self._fallback.hold_until(self._clock() + self._budget.window)
        log.warning("pacer.redis_unavailable", fallback="in-process", share=self._fallback.budget.limit)

    def _came_back(self, asked: float) -> None:
        with self._lock:
            if self._on_redis:
                return
            self._on_redis = True
            self._shared_from = asked + self._breaker.open_seconds + self._budget.window
        log.info("pacer.redis_back")


def _on_time(late: float, attempt: int) -> bool:
    """Whether a request woken `late` seconds after its moment may go (the last attempt goes anyway)."""
    if late <= LATE_SECONDS:
        return True
    if attempt < LATE_RETRIES:
        return False
    log.warning("pacer.went_late", late_seconds=round(late, 3), wakeups=attempt + 1)
    return True


class LazyPacer:
    """Builds its pacer on the first request, in the process that sends it: the web process, which never
    calls Stripe, then never connects to Redis for it, and a forked worker never inherits a socket."""

    shared = True

    def __init__(self, build: Callable[[], Pacer], rate: float) -> None:
        self.rate = rate
        self._build = build
        self._pacer: Pacer | None = None
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            if self._pacer is None:
                self._pacer = self._build()
        self._pacer()


def build_pacer(
    redis_url: str | None,
    key: str,
    rate: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    timeout_seconds: float = 2.0,
    fallback_share: int = 1,
) -> Pacer:
    """A Redis-shared pacer when Redis answers; else one for this process only: the whole budget without Redis
    (`dev`: one process), a share of it (one of `fallback_share` processes) when Redis does not answer. `clock`
    and `sleep` serve the in-process pacing (Redis's own clock sets the shared moments)."""
    if not redis_url:
        return LocalPacer(rate, clock, sleep)
    try:
        client = redis_client(redis_url, socket_timeout=timeout_seconds, connect_timeout=timeout_seconds)
        client.ping()
        return RedisPacer(client, key, rate, clock, sleep, fallback_share=fallback_share)
    except (redis.RedisError, OSError) as error:
        log.warning("pacer.redis_unavailable", error=str(error), fallback="in-process")
    return LocalPacer(rate, clock, sleep, budget=Budget.per_second(rate).share(fallback_share))


def with_retries(
    call: Callable[[], T],
    *,
    attempts: int = 4,
    first_backoff: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run `call`, retrying on StripeUnavailable (429, 5xx, timeouts) with doubling pauses; then give up."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except StripeUnavailable as error:
            if attempt == attempts:
                raise
            pause = first_backoff * 2 ** (attempt - 1)
            log.warning("stripe.retrying", attempt=attempt, pause_seconds=pause, error=str(error))
            sleep(pause)
    raise AssertionError("unreachable")
