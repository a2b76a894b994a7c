"""Keeping every call to Stripe within its budget, and retrying what Stripe asks us to retry.

The rule, and the log this process keeps (alone, or beside Redis): `admissions.py`. The log lives in Redis
when it is reachable (one script call per request, on Redis's clock, so that every process and machine agrees);
otherwise in this process, with the same rule. See `RedisPacer` for the switch.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
import uuid
from collections.abc import Callable
from typing import TypeVar

import redis

from .admissions import HORIZON_SECONDS, LATE_RETRIES, Budget, LocalPacer, on_time
from .breaker import CircuitBreaker
from .errors import StripeUnavailable
from .logs import get_logger
from .ports import Pacer
from .redis_client import redis_client

log = get_logger(__name__)
T = TypeVar("T")


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
            if on_time(self._clock() - (asked + wait), attempt):
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
