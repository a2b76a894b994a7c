"""`AccessClient`: an in-process copy of effective access, kept exact by following the service's feed.

    client = AccessClient("http://entitlement-sync:8001", token, defaults={"api_access": False})
    client.wait_until_ready(5)
    if client.has_access("cus_123", "api_access"): ...    # a dict lookup: no network, no database

It takes a snapshot (`GET /v1/access-snapshot`, every page), then follows `GET /v1/access-changes` with long
polls in a daemon thread, applying each change in order. When the service cannot be reached it keeps
answering from its last copy, says so (`unreachable`, and `stale` counts the seconds), and answers customers
it has never seen with the per-feature `defaults`. A 410 (its cursor is older than the feed keeps) makes it
take a new snapshot. This package imports neither Flask nor SQLAlchemy.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .transport import Transport, TransportError, Urllib3Transport

__all__ = ["AccessClient", "Answer", "Transport", "TransportError"]

CHANGES = "/v1/access-changes"
SNAPSHOT = "/v1/access-snapshot"


@dataclass(frozen=True)
class Answer:
    granted: bool
    source: str  # "copy": the service's answer; "default": never seen while the copy is not current
    stale: float  # seconds the copy may be behind (0.0 while the service answers)


class _CursorGone(Exception):
    pass


class _Unexpected(Exception):
    pass


class AccessClient:
    def __init__(
        self,
        url: str,
        token: str,
        *,
        defaults: Mapping[str, bool] | None = None,
        wait_seconds: float = 15.0,
        page_size: int = 1000,
        min_pause: float = 1.0,
        max_pause: float = 30.0,
        on_change: Callable[[dict[str, Any]], None] | None = None,
        transport: Transport | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
        start: bool = True,
    ) -> None:
        """`defaults`: the answer per lookup key for a customer the copy has never seen while the copy is not
        current (not loaded yet, or the service unreachable); False for keys not named. `on_change` is called
        (in the feed thread) with each change as the feed gives it, after the copy has it."""
        self._transport = transport or Urllib3Transport(url, token)
        self._defaults = dict(defaults or {})
        self._wait = wait_seconds
        self._page_size = page_size
        self._min_pause, self._max_pause = min_pause, max_pause
        self._on_change = on_change
        self._monotonic = monotonic
        self._stopping = threading.Event()
        self._sleep = sleep or self._stopping.wait
        self._access: dict[tuple[str, str], bool] = {}
        self._known: set[str] = set()
        self._cursor: int | None = None  # None: no copy yet (or it must be re-taken)
        self._loaded = threading.Event()
        self._last_ok = monotonic()
        self._unreachable = False
        self._pause = min_pause
        self.snapshots = 0  # how many snapshots were taken (1 + one per 410)
        self._thread: threading.Thread | None = None
        if start:
            self._thread = threading.Thread(target=self._follow, name="access-client", daemon=True)
            self._thread.start()

    # --- answers: memory only ---------------------------------------------------------------------------

    def has_access(self, customer: str, lookup_key: str) -> bool:
        granted = self._access.get((customer, lookup_key))
        if granted is not None:
            return granted
        if customer in self._known or (self._loaded.is_set() and not self._unreachable):
            return False
        return self._defaults.get(lookup_key, False)

    def check(self, customer: str, lookup_key: str) -> Answer:
        """`has_access`, and where the answer came from and how stale the copy may be."""
        granted = self._access.get((customer, lookup_key))
        if granted is None and customer not in self._known and not self.current:
            return Answer(self._defaults.get(lookup_key, False), "default", self.stale)
        return Answer(bool(granted), "copy", self.stale)

    def granted(self) -> set[tuple[str, str]]:
        """Every (customer, lookup key) the copy grants: for audits and tests, not the hot path."""
        return {pair for pair, granted in list(self._access.items()) if granted}

    def has_default(self, lookup_key: str) -> bool:
        return lookup_key in self._defaults

    @property
    def ready(self) -> bool:
        """A copy has been loaded (it may have gone stale since: see `stale`)."""
        return self._loaded.is_set()

    @property
    def current(self) -> bool:
        return self._loaded.is_set() and not self._unreachable

    @property
    def unreachable(self) -> bool:
        """The last request to the service failed: answers come from the last copy."""
        return self._unreachable

    @property
    def stale(self) -> float:
        """Seconds the copy may be behind: 0.0 while the service answers (the feed thread is waiting in a long
        poll or applying changes); otherwise the seconds since it last answered."""
        return 0.0 if self.current else max(0.0, self._monotonic() - self._last_ok)

    @property
    def cursor(self) -> int | None:
        return self._cursor

    def wait_until_ready(self, timeout: float | None = None) -> bool:
        return self._loaded.wait(timeout)

    def close(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=self._wait + 15)
        self._transport.close()

    def __enter__(self) -> AccessClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- following the feed -------------------------------------------------------------------------------

    def _follow(self) -> None:
        while not self._stopping.is_set():
            pause = self.poll_once()
            if pause:
                self._sleep(pause)

    def poll_once(self, wait: float | None = None) -> float:
        """One step: take the snapshot if there is no copy, else one (long) poll. Returns how long to pause
        before the next step (0: go on). Never raises: failures are recorded and paced."""
        wait = self._wait if wait is None else wait
        try:
            if self._cursor is None:
                self._load()
                return 0.0
            started = self._monotonic()
            applied = self._poll(wait)
        except _CursorGone:
            self._cursor = None  # a new snapshot at once
            return 0.0
        except (TransportError, _Unexpected):
            self._unreachable = True
            pause, self._pause = self._pause, min(self._pause * 2, self._max_pause)
            return pause
        self._pause = self._min_pause
        # An empty answer well before the wait was over: the server had no thread to spare for a long poll.
        if not applied and wait > 0 and self._monotonic() - started < wait / 2:
            return self._min_pause
        return 0.0

    def _load(self) -> None:
        """Every page of the snapshot into a new copy, caught up with the feed, then swapped in at once."""
        access: dict[tuple[str, str], bool] = {}
        known: set[str] = set()
        cursors, after = [], ""
        while True:
            page = self._get(SNAPSHOT, {"after_customer": after, "limit": self._page_size})
            cursors.append(int(page["cursor"]))
            for row in page["access"]:
                access[row["customer"], row["lookup_key"]] = bool(row["granted"])
                known.add(row["customer"])
            if page.get("next_after_customer") is None:
                break
            after = page["next_after_customer"]
        # Later pages were read later: replaying from the first page's cursor brings every page up to date.
        cursor = min(cursors)
        while True:
            changes, cursor = self._changes(cursor, 0.0)
            _apply(access, known, changes)
            if not changes:
                break
        self._access, self._known, self._cursor = access, known, cursor
        self.snapshots += 1
        self._succeeded()
        self._loaded.set()

    def _poll(self, wait: float) -> int:
        assert self._cursor is not None
        changes, cursor = self._changes(self._cursor, wait)
        _apply(self._access, self._known, changes)
        self._cursor = cursor
        self._succeeded()
        if self._on_change is not None:
            for change in changes:
                self._on_change(change)
        return len(changes)

    def _changes(self, after: int, wait: float) -> tuple[list[dict[str, Any]], int]:
        page = self._get(CHANGES, {"after": after, "limit": self._page_size, "wait": wait}, timeout=wait + 10)
        return page["changes"], int(page["next_cursor"])

    def _get(self, path: str, params: dict[str, Any], timeout: float = 10.0) -> Any:
        status, body = self._transport.get(path, params, timeout)
        if status == 410:
            raise _CursorGone()
        if status != 200 or not isinstance(body, dict):
            raise _Unexpected(f"{path} answered {status}")
        return body

    def _succeeded(self) -> None:
        self._last_ok = self._monotonic()
        self._unreachable = False


def _apply(access: dict[tuple[str, str], bool], known: set[str], changes: Iterable[dict[str, Any]]) -> None:
    for change in changes:
        access[change["customer"], change["lookup_key"]] = change["change"] == "granted"
        known.add(change["customer"])
