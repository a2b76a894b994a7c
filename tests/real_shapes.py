"""Subscription events in Stripe's real shapes, from the simulator's fixture-built JSON (`testing.shapes`):
prices and plans with `*_decimal` strings, a discount whose coupon has a float `percent_off`, nulls."""

from __future__ import annotations

from typing import Any

from entitlement_sync.testing.shapes import discount, event, subscription

PRICE = ("price_1PgafmB7WZ01zgkW6dKueIc5", "prod_QXg1hqf4jFNsqG")  # Stripe's sample price, `unit_amount_decimal`


def subscription_event(
    event_type: str,
    customer_id: str,
    *,
    event_id: str,
    created: int,
    status: str = "active",
    livemode: bool = False,
) -> dict[str, Any]:
    """`customer.subscription.*` as Stripe's API returns it, with an expanded discount (a float inside)."""
    subscription_id = f"sub_{customer_id}"
    coupon = discount(f"di_{customer_id}", customer_id, subscription_id, start=created)
    data_object = subscription(
        subscription_id, customer_id, status=status, prices=[PRICE], livemode=livemode, discounts=[coupon]
    )
    previous = {"status": "trialing"} if event_type.endswith(".updated") else None
    return event(
        event_type, data_object, event_id=event_id, created=created, livemode=livemode, previous_attributes=previous
    )
