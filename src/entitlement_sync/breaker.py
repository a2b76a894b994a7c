"""A circuit breaker for one process: after a failure, stop calling a dependency for a while.

A Redis that hangs instead of refusing costs every caller its socket timeout. Once one caller has paid it,
the others skip the call for `open_seconds` and take their fallback at once (the receiver leaves the event
`received` for the sweep); then a single caller probes again while the rest keep skipping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class CircuitBreaker:
    def __init__(
        self,
        open_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        """`on_change` hears each move to "open", "half_open" (a probe goes through) or "closed"."""
        self.open_seconds = open_seconds
        self._clock = clock
        self._on_change = on_change or (lambda state: None)
        self._lock = threading.Lock()
        self._open_until: float | None = None  # None: closed, every call goes through
        self._state = "closed"

    def allows(self) -> bool:
        """Whether the caller may try the dependency now. While open, no; once the pause is over, exactly one
        caller (the probe) may; the others wait out another pause, unless the probe's `succeeded()` closes
        the breaker first. A probe that never reports back only costs one more pause."""
        with self._lock:
            if self._open_until is None:
                return True
            now = self._clock()
            if now < self._open_until:
                return False
            self._open_until = now + self.open_seconds
            self._become("half_open")
            return True

    def succeeded(self) -> None:
        with self._lock:
            self._open_until = None
            self._become("closed")

    def failed(self) -> None:
        with self._lock:
            self._open_until = self._clock() + self.open_seconds
            self._become("open")

    def _become(self, state: str) -> None:
        if state != self._state:
            self._state = state
            self._on_change(state)

    @property
    def failed_since_last_allowed(self) -> bool:
        """Whether a call failed after the last one let through: open, and no probe allowed since. A caller
        that was allowed before that failure may skip its call too, rather than pay the same timeout again."""
        with self._lock:
            return self._state == "open"

    @property
    def is_open(self) -> bool:
        with self._lock:
            return self._open_until is not None
