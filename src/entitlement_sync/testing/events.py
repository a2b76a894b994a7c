"""The account's event log: what `GET /v1/events` serves, and what the webhook sender is told about."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

RETENTION_SECONDS = 30 * 86400  # Stripe's Events API keeps the last 30 days only

Listener = Callable[[dict[str, Any]], None]


@dataclass
class RecordedEvent:
    body: dict[str, Any]
    delivered: bool = False  # set once any delivery of it was answered 2xx


class EventLog:
    """Events in the order they were recorded; thread-safe. `now` gives unix seconds (the model's clock)."""

    def __init__(self, now: Callable[[], int]) -> None:
        self._now = now
        self._events: list[RecordedEvent] = []
        self._by_id: dict[str, RecordedEvent] = {}
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()

    def record(self, body: dict[str, Any]) -> None:
        with self._lock:
            recorded = RecordedEvent(body)
            self._events.append(recorded)
            self._by_id[body["id"]] = recorded
            listeners = list(self._listeners)
        for listener in listeners:
            listener(body)

    def listen(self, listener: Listener) -> None:
        """Call `listener(event)` for every event recorded from now on (the webhook sender's queue)."""
        with self._lock:
            self._listeners.append(listener)

    def unlisten(self, listener: Listener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def mark_delivered(self, event_id: str) -> None:
        with self._lock:
            if event_id in self._by_id:
                self._by_id[event_id].delivered = True

    def all(self) -> list[dict[str, Any]]:
        """Every event ever recorded, oldest first (retention does not apply here)."""
        with self._lock:
            return [recorded.body for recorded in self._events]

    def of_type(self, *types: str) -> list[dict[str, Any]]:
        return [body for body in self.all() if body["type"] in types]

    def get(self, event_id: str) -> dict[str, Any] | None:
        with self._lock:
            recorded = self._by_id.get(event_id)
            return recorded.body if recorded else None

    def search(
        self,
        types: list[str] | None = None,
        created: dict[str, int] | None = None,
        delivery_success: bool | None = None,
    ) -> list[dict[str, Any]]:
        """Events of the last 30 days matching the filters, newest first, as `GET /v1/events` lists them."""
        oldest = self._now() - RETENTION_SECONDS
        with self._lock:
            recorded = list(reversed(self._events))
        return [
            {**item.body, "pending_webhooks": 0 if item.delivered else 1}
            for item in recorded
            if item.body["created"] >= oldest
            and _type_matches(item.body["type"], types)
            and _created_matches(item.body["created"], created or {})
            and (delivery_success is None or item.delivered == delivery_success)
        ]


def _type_matches(event_type: str, types: list[str] | None) -> bool:
    if not types:
        return True
    # Stripe accepts a trailing wildcard: `customer.subscription.*`.
    return any(event_type == t or (t.endswith("*") and event_type.startswith(t[:-1])) for t in types)


def _created_matches(created: int, bounds: dict[str, int]) -> bool:
    checks = {
        "eq": created == bounds.get("eq", created),
        "gt": created > bounds.get("gt", created - 1),
        "gte": created >= bounds.get("gte", created),
        "lt": created < bounds.get("lt", created + 1),
        "lte": created <= bounds.get("lte", created),
    }
    return all(checks.values())
