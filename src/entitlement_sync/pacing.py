"""Keeping ops commands below Stripe's rate limit, and retrying what Stripe asks us to retry.

The pacer hands out one slot every 1/rate seconds (a token bucket holding one token). Slots are reserved
in Redis when it is reachable, so several `sync all` runs on several machines share one budget; otherwise
in this process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

import redis

from .breaker import CircuitBreaker
from .errors import StripeUnavailable
from .logs import get_logger
from .ports import Pacer
from .redis_client import redis_client

log = get_logger(__name__)
T = TypeVar("T")

# Pace at 98% of the requested rate: the HTTP request leaves a moment after its slot, and that jitter must
# never push two slots' worth of requests into one second as Stripe counts them.
HEADROOM = 0.98

# Reserve the next free slot, on Redis's clock so that every machine agrees; returns the wait in seconds.
_RESERVE_SLOT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = tonumber(ARGV[1])
local next_free = tonumber(redis.call('GET', KEYS[1]) or '0')
local slot = math.max(next_free, now)
redis.call('SET', KEYS[1], string.format('%.6f', slot + interval), 'PX', 60000)
return string.format('%.6f', slot - now)
"""


class LocalPacer:
    shared = False

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self._interval = 1.0 / (rate * HEADROOM)
        self._clock, self._sleep = clock, sleep
        self._next_free = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            now = self._clock()
            slot = max(self._next_free, now)
            self._next_free = slot + self._interval
        if slot > now:
            self._sleep(slot - now)

    def count_sent(self) -> None:
        """A request left just now through another pacer: the next slot here is one interval after it."""
        with self._lock:
            self._next_free = max(self._next_free, self._clock() + self._interval)


class RedisPacer:
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
    ) -> None:
        self.rate = rate
        self._interval = 1.0 / (rate * HEADROOM)
        self._key = key
        self._reserve = client.register_script(_RESERVE_SLOT)
        self._sleep = sleep
        self._fallback = LocalPacer(rate, clock, sleep)
        # A Redis that hangs would cost every Stripe call its socket timeout: after one, skip Redis a while.
        self._breaker = breaker or CircuitBreaker(5.0)

    def __call__(self) -> None:
        if not self._breaker.allows():
            self._fallback()
            return
        try:
            wait = float(self._reserve(keys=[self._key], args=[f"{self._interval:.6f}"]))
        except (redis.RedisError, OSError):
            # Redis went away after start-up: keep this process under the rate on its own, and keep syncing.
            self._breaker.failed()
            self._fallback()
            return
        self._breaker.succeeded()
        if wait > 0:
            self._sleep(wait)
        # Should Redis go away, the fallback's first slot must not land on top of the one Redis just gave.
        self._fallback.count_sent()


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
) -> Pacer:
    """A Redis-shared pacer when Redis answers, else one for this process only. `clock` and `sleep` serve the
    in-process pacing (Redis's own clock sets the shared slots)."""
    if redis_url:
        try:
            client = redis_client(redis_url, socket_timeout=timeout_seconds, connect_timeout=timeout_seconds)
            client.ping()
            return RedisPacer(client, key, rate, clock, sleep)
        except (redis.RedisError, OSError) as error:
            log.warning("pacer.redis_unavailable", error=str(error), fallback="in-process")
    return LocalPacer(rate, clock, sleep)


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
