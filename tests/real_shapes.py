"""Events in Stripe's real shapes, built from Stripe's published fixtures (tests/fixtures/stripe/): prices with
`*_decimal` strings, a coupon with a float `percent_off`, expanded and unexpanded references, nulls."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures" / "stripe"


@cache
def _fixture(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return loaded


def fixture(name: str) -> dict[str, Any]:
    """A fresh copy of Stripe's fixture `name` (price, plan, coupon, discount, subscription, event, ...)."""
    return copy.deepcopy(_fixture(name))


def subscription_object(customer_id: str, subscription_id: str, status: str = "active") -> dict[str, Any]:
    subscription = fixture("subscription")
    subscription.update(id=subscription_id, customer=customer_id, status=status, cancel_at_period_end=False)
    item = subscription["items"]["data"][0]
    item.update(price=fixture("price"), plan=fixture("plan"), subscription=subscription_id)
    discount = fixture("discount")
    discount.update(customer=customer_id, subscription=subscription_id)
    discount["source"]["coupon"] = fixture("coupon")  # expanded: carries `percent_off: 25.5`
    subscription.update(discounts=[discount["id"]], discount=discount)  # one unexpanded, one expanded
    return subscription


def subscription_event(
    event_type: str,
    customer_id: str,
    *,
    event_id: str,
    created: int,
    subscription_id: str | None = None,
    status: str = "active",
    livemode: bool = False,
) -> dict[str, Any]:
    """`customer.subscription.*` in the shape Stripe's API returns it (the envelope of fixtures/event.json)."""
    envelope = fixture("event")
    data_object = subscription_object(customer_id, subscription_id or f"sub_{customer_id}", status)
    data_object["livemode"] = livemode
    data: dict[str, Any] = {"object": data_object}
    if event_type.endswith(".updated"):
        data["previous_attributes"] = {"status": "trialing", "items": None}
    envelope.update(
        id=event_id, type=event_type, created=created, livemode=livemode, data=data, api_version="2025-03-31.basil"
    )
    envelope["request"] = {"id": None, "idempotency_key": None}
    return envelope
