"""Faults on the simulated API: scripted failures, shares of 429/5xx, slow answers, timeouts, a rate limit.

Random choices come from a seeded `random.Random`, so a failing run can be replayed; every injected fault is
counted in `ApiFaults.injected`. Faults apply to API calls only, never to webhook deliveries.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import shapes

Answer = tuple[int, dict[str, str], dict[str, Any]]


@dataclass
class ScriptedFault:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def rate_limited(reason: str = "global-rate") -> Answer:
    """Stripe's 429: stripe-python raises `RateLimitError` for it."""
    body = shapes.error_body(
        "invalid_request_error",
        "Request rate limit exceeded. Learn more about rate limits here https://stripe.com/docs/rate-limits.",
        code="rate_limit",
    )
    return 429, {"Stripe-Rate-Limited-Reason": reason}, body


def server_error(status: int = 500) -> Answer:
    """A Stripe-side failure: stripe-python raises `APIError` for it."""
    return (
        status,
        {},
        shapes.error_body("api_error", f"Simulated HTTP {status}: something went wrong on Stripe's end."),
    )


class TokenBucket:
    """`rate` requests per second, bursts up to `burst`; `clock` is injectable, so tests need not sleep."""

    def __init__(self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(rate, 1.0)
        self._clock = clock
        self._tokens = self.burst
        self._last = clock()
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens >= 1:
                self._tokens -= 1
                return True
            return False


class ApiFaults:
    """The fault knobs of one simulated API. Set the attributes at any time; they apply to the next request.

    - `rate_limit_share`: share of requests answered 429 with `Stripe-Rate-Limited-Reason: rate_limit_reason`;
    - `server_error_share`: share answered `server_error_status` (500 by default);
    - `slow_share` / `slow_seconds`: share answered normally but only after a delay;
    - `timeout_share` / `timeout_seconds`: share that sleep past the client's timeout (then answer 500);
    - `limit_rate(n)`: a token bucket of n requests/s; requests beyond it get a 429.
    """

    def __init__(self, seed: int = 0, clock: Callable[[], float] = time.monotonic) -> None:
        self.random = random.Random(seed)
        self.clock = clock
        self.rate_limit_share = 0.0
        self.rate_limit_reason = "global-rate"
        self.server_error_share = 0.0
        self.server_error_status = 500
        self.slow_share = 0.0
        self.slow_seconds = 0.5
        self.timeout_share = 0.0
        self.timeout_seconds = 10.0
        self.bucket: TokenBucket | None = None
        self.injected: Counter[str] = Counter()
        self._scripted: deque[ScriptedFault] = deque()
        self._lock = threading.Lock()
        self._released = threading.Event()  # set on shutdown, so sleeping requests end at once
        # How slow and timeout faults wait; replace it (e.g. with a list's `append`) to test them without sleeping.
        self.sleep: Callable[[float], object] = self._released.wait

    def limit_rate(self, requests_per_second: float | None, burst: float | None = None) -> None:
        """Answer 429 (`global-rate`) beyond this many requests per second; None lifts the limit."""
        self.bucket = None if requests_per_second is None else TokenBucket(requests_per_second, burst, self.clock)

    def fail_next(self, status: int, times: int = 1, *, headers: dict[str, str] | None = None) -> None:
        """Answer the next `times` API requests with this HTTP status, in Stripe's error shape."""
        if status == 429:
            _, default_headers, body = rate_limited()
        else:
            kind = "invalid_request_error" if status < 500 else "api_error"
            default_headers, body = {}, shapes.error_body(kind, f"Simulated HTTP {status}")
        merged = {**default_headers, **(headers or {})}
        with self._lock:
            self._scripted.extend(ScriptedFault(status, body, merged) for _ in range(times))

    def clear(self) -> None:
        """Back to a healthy API: no shares, no rate limit, no scripted failures (counters are kept)."""
        with self._lock:
            self._scripted.clear()
        self.rate_limit_share = self.server_error_share = self.slow_share = self.timeout_share = 0.0
        self.bucket = None

    def release_sleepers(self) -> None:
        """End every injected sleep now and skip new ones (the server is stopping)."""
        self._released.set()

    def allow_sleepers(self) -> None:
        """Let slow and timeout faults sleep again (a server is starting)."""
        self._released.clear()

    def before_answering(self) -> Answer | None:
        """The fault to answer with instead of the real answer, or None (after any injected slowness)."""
        with self._lock:
            scripted = self._scripted.popleft() if self._scripted else None
        if scripted is not None:
            self._count("scripted")
            return scripted.status, scripted.headers, scripted.body
        if self.bucket is not None and not self.bucket.take():
            self._count("rate_limited_by_bucket")
            return rate_limited("global-rate")
        return self._random_fault()

    def _random_fault(self) -> Answer | None:
        with self._lock:
            draw = self.random.random()
        shares = [
            ("rate_limited", self.rate_limit_share),
            ("server_error", self.server_error_share),
            ("timeout", self.timeout_share),
            ("slow", self.slow_share),
        ]
        for kind, share in shares:
            if draw < share:
                self._count(kind)
                return self._inject(kind)
            draw -= share
        return None

    def _count(self, kind: str) -> None:
        with self._lock:
            self.injected[kind] += 1

    def _inject(self, kind: str) -> Answer | None:
        if kind == "rate_limited":
            return rate_limited(self.rate_limit_reason)
        if kind == "server_error":
            return server_error(self.server_error_status)
        if kind == "timeout":
            self.sleep(self.timeout_seconds)
            return server_error(500)
        self.sleep(self.slow_seconds)
        return None
