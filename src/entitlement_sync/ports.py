"""The edges the use cases depend on, as small Protocols: real adapters and test fakes both satisfy them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from .stripe_gateway import ActiveEntitlement


class EntitlementSource(Protocol):
    def list_active_entitlements(self, customer_id: str) -> list[ActiveEntitlement]: ...


class JobQueue(Protocol):
    def enqueue_event(self, event_id: str) -> None:
        """Hand the event to a worker; raises QueueUnavailable when the broker cannot take it."""

    def ping(self) -> None:
        """Raise QueueUnavailable unless the broker answers."""


Clock = Callable[[], datetime]
