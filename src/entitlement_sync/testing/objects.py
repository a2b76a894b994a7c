"""The objects of a simulated Stripe account, with their JSON as Stripe's API shows them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import shapes

GRANTING_STATUSES = frozenset({"active", "trialing", "past_due"})
STATUSES = GRANTING_STATUSES | {"canceled", "incomplete", "incomplete_expired", "unpaid", "paused"}


class SimulationError(ValueError):
    """A change Stripe would refuse: a taken lookup key, attaching an archived feature, an unknown id."""


@dataclass
class Feature:
    id: str
    lookup_key: str
    name: str
    active: bool = True

    def as_json(self) -> dict[str, Any]:
        return shapes.feature(self.id, self.lookup_key, active=self.active, name=self.name)


@dataclass
class Product:
    id: str
    feature_ids: list[str] = field(default_factory=list)
    attachment_ids: dict[str, str] = field(default_factory=dict)  # feature id -> prodft_ id


@dataclass
class Subscription:
    id: str
    customer_id: str
    product_ids: list[str]
    status: str
    created: int
    trial_end: int | None = None
    period_start: int = 0
    canceled_at: int | None = None
    with_coupon: bool = False  # Stripe's sample coupon, 25.5 % off
    # Catalog changes reach a subscriber at their next period: each period freezes its products' features.
    features_this_period: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        prices = [(f"price_{product.removeprefix('prod_')}", product) for product in self.product_ids]
        discount_id = f"di_{self.id.removeprefix('sub_')}"
        discounts = [shapes.discount(discount_id, self.customer_id, self.id, start=self.created)]
        return shapes.subscription(
            self.id,
            self.customer_id,
            status=self.status,
            prices=prices,
            current_period_end=self.period_start + shapes.PERIOD_SECONDS,
            created=self.created,
            trial_end=self.trial_end,
            canceled_at=self.canceled_at,
            discounts=discounts if self.with_coupon else [],
        )
