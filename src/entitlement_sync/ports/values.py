"""The values the use cases share, and the shapes of the callables they are given (clock, sleep, retry)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

from ..ordering import UNKNOWN, Window

T = TypeVar("T")

Clock = Callable[[], datetime]
Sleep = Callable[[float], None]
Retry = Callable[[Callable[[], T]], T]
"""Runs a call to Stripe, retrying what may pass (429, 5xx, timeouts); see `pacing.with_retries`."""


@dataclass(frozen=True)
class ActiveEntitlement:
    """One feature a customer may use now, as Stripe's active-entitlements list says."""

    id: str
    feature_id: str
    lookup_key: str


@dataclass(frozen=True)
class EntitlementsRead:
    """One fetch of a customer's active entitlements, with Stripe's clock of the read (see `ordering`)."""

    entitlements: list[ActiveEntitlement]
    window: Window = UNKNOWN


@dataclass(frozen=True)
class CatalogFeature:
    id: str
    lookup_key: str
    name: str
    active: bool
    livemode: bool


@dataclass(frozen=True)
class ProductFeatureLink:
    id: str
    product_id: str
    feature: CatalogFeature


class CustomerState(StrEnum):
    """What `GET /v1/customers/{id}` says of a customer, for this key's account and mode."""

    EXISTS = "exists"
    DELETED = "deleted"  # `{"id": ..., "object": "customer", "deleted": true}`
    UNKNOWN = "unknown"  # 404: never a customer of this account and mode


@dataclass(frozen=True)
class StripeAccount:
    """`GET /v1/account`: whose key this is."""

    id: str
    name: str | None


@dataclass(frozen=True)
class EventPage:
    """One page of Stripe's Events API: each event as the JSON Stripe returned, newest first."""

    events: list[dict[str, Any]]
    has_more: bool

    @property
    def last_id(self) -> str | None:
        return str(self.events[-1]["id"]) if self.events else None


@dataclass(frozen=True)
class StuckRule:
    """When an unfinished event counts as stuck (see `store.inbox.is_stuck`)."""

    received_grace: timedelta  # the receiver enqueues right after its commit; give it this long
    stuck_after: timedelta  # queued or processing this long: the job was lost or its worker died


@dataclass(frozen=True)
class AccessLine:
    """One feature of a customer and why they have it (or not), for people: the console's customer page."""

    lookup_key: str
    feature: str
    granted: bool
    reason: str  # issue 10's words: stripe_entitlement, manual_grant, catalog, withheld:<status>, manual_denial…
    sources: tuple[str, ...]  # the ids behind it: entitlement, subscription, product, grant, event
    since: datetime | None


@dataclass(frozen=True)
class ManualGrant:
    """A grant or denial made outside Stripe (issue 10)."""

    id: str
    lookup_key: str
    kind: str  # grant | deny
    until: datetime | None
    reason: str
    by: str


@dataclass(frozen=True)
class WaitRule:
    """How long an event waits for Stripe after the queue's retries ran out, and for how long in all.

    Stripe's 429s, 5xx and timeouts pass; an event is `failed` for them only once they outlast `give_up_after`
    (Stripe's own redelivery window is 3 days).
    """

    first_pause: timedelta = timedelta(seconds=30)
    max_pause: timedelta = timedelta(hours=1)
    give_up_after: timedelta = timedelta(days=3)

    def pause(self, waits_so_far: int) -> timedelta:
        """The first pause, doubling with each wait, up to `max_pause`."""
        pause: timedelta = self.first_pause * (2 ** min(waits_so_far, 30))
        return min(pause, self.max_pause)


@dataclass(frozen=True)
class WebhookSubscriber:
    """A receiver of access webhooks (`ACCESS_WEBHOOK_URLS`): its URL and its Standard Webhooks secret."""

    url: str
    secret: str = field(repr=False)  # whsec_<base64>


@dataclass(frozen=True)
class PostOutcome:
    """What one POST to a subscriber came to: its HTTP status (None: no answer, a timeout, a refused
    connection) and, unless it was a 2xx, why it does not count as delivered."""

    status: int | None
    error: str | None = None

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300
