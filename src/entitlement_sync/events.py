"""What a Stripe event means to us: which types we handle, whose customer it concerns, what a subscription says."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .errors import InvalidWebhook

SUMMARY_UPDATED = "entitlements.active_entitlement_summary.updated"
SUBSCRIPTION_TYPES = frozenset(
    f"customer.subscription.{suffix}"
    for suffix in (
        "created",
        "updated",
        "deleted",
        "paused",
        "resumed",
        "trial_will_end",
        "pending_update_applied",
        "pending_update_expired",
    )
)
HANDLED_TYPES = SUBSCRIPTION_TYPES | {SUMMARY_UPDATED}


@dataclass(frozen=True)
class InboundEvent:
    id: str
    type: str
    created: int
    livemode: bool
    customer_id: str | None
    payload: dict[str, Any]
    account: str | None = None  # a connected account's id (`acct_...`): the objects live in that account

    @property
    def data_object(self) -> dict[str, Any]:
        data_object: dict[str, Any] = self.payload["data"]["object"]  # checked by event_from_payload
        return data_object


def parse_event(body: bytes | str) -> InboundEvent:
    """The event in a verified body; InvalidWebhook when the body is not a Stripe event."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidWebhook("body is not JSON") from error
    return event_from_payload(payload)


def event_from_payload(payload: Any) -> InboundEvent:
    if not isinstance(payload, dict) or payload.get("object", "event") != "event":
        raise InvalidWebhook("body is not a Stripe event")
    event_id, event_type, created = payload.get("id"), payload.get("type"), payload.get("created")
    data = payload.get("data")
    if not (isinstance(event_id, str) and event_id and len(event_id) <= 255):
        raise InvalidWebhook("event has no valid id")
    if not (isinstance(event_type, str) and event_type and len(event_type) <= 100):
        raise InvalidWebhook("event has no valid type")
    if not isinstance(created, int) or isinstance(created, bool):
        raise InvalidWebhook("event has no valid created timestamp")
    if not (isinstance(data, dict) and isinstance(data.get("object"), dict)):
        raise InvalidWebhook("event has no data.object")
    return InboundEvent(
        id=event_id,
        type=event_type,
        created=created,
        livemode=bool(payload.get("livemode", False)),
        customer_id=_customer_of(data["object"]),
        payload=payload,
        account=payload["account"] if isinstance(payload.get("account"), str) and payload["account"] else None,
    )


def connect_reason(account: Any) -> str | None:
    """Why an event of a connected account is not applied; None for the platform's own events.

    Its customer lives in the connected account: applying it would grant or revoke a platform customer's
    access from another account's objects (or call Stripe without the `Stripe-Account` header it needs).
    """
    if not account:
        return None
    return f"event of connected account {account}: Stripe Connect is not supported (one account per deployment)"


def _customer_of(data_object: dict[str, Any]) -> str | None:
    customer = data_object.get("customer")
    if isinstance(customer, dict):
        customer = customer.get("id")
    return customer if isinstance(customer, str) and customer and len(customer) <= 255 else None


@dataclass(frozen=True)
class SubscriptionSnapshot:
    id: str
    customer_id: str
    status: str
    cancel_at_period_end: bool
    current_period_end: datetime | None
    price_ids: list[str]
    product_ids: list[str]


def subscription_snapshot(data_object: dict[str, Any], customer_id: str) -> SubscriptionSnapshot:
    items = (data_object.get("items") or {}).get("data") or []
    prices = [item.get("price") or {} for item in items]
    # Current API versions keep the period on each item; older ones on the subscription itself.
    period_ends = [item["current_period_end"] for item in items if item.get("current_period_end")]
    period_end = max(period_ends) if period_ends else data_object.get("current_period_end")
    return SubscriptionSnapshot(
        id=data_object["id"],
        customer_id=customer_id,
        status=str(data_object.get("status") or "unknown"),
        cancel_at_period_end=bool(data_object.get("cancel_at_period_end")),
        current_period_end=datetime.fromtimestamp(period_end, UTC) if period_end else None,
        price_ids=[price["id"] for price in prices if price.get("id")],
        product_ids=[_id_of(price.get("product")) for price in prices if price.get("product")],
    )


def _id_of(value: Any) -> str:
    return value["id"] if isinstance(value, dict) else str(value)
