"""Random plan changes: each one moves a customer's entitlements in the simulated Stripe first, then yields
the events Stripe would send about it, in Stripe's shapes.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from entitlement_sync.testing import FakeStripe, active_entitlement, event, subscription, summary_event

BASIC = [("feat_api", "api_access")]
PRO = [*BASIC, ("feat_ai", "ai_assistant"), ("feat_exports", "exports")]
# An archived feature and its replacement share the lookup key `exports`: rows are keyed by feature id.
ENTERPRISE = [*PRO, ("feat_exports_v2", "exports"), ("feat_sso", "sso"), ("feat_audit", "audit_log")]
# More than 10 entitlements: the summary event carries 10 and says `has_more`.
EVERYTHING = [*ENTERPRISE, *[(f"feat_addon_{n}", f"addon_{n}") for n in range(8)]]
PLANS: dict[str, list[tuple[str, str]]] = {
    "basic": BASIC,
    "pro": PRO,
    "enterprise": ENTERPRISE,
    "everything": EVERYTHING,
}


class Workload:
    """Customers on random plans; `batches()` changes them in Stripe and returns the events Stripe sends."""

    def __init__(self, stripe: FakeStripe, customers: int, *, seed: int, prefix: str = "cus_e2e") -> None:
        self.stripe = stripe
        self.customers = [f"{prefix}_{n:04d}" for n in range(customers)]
        self._random = random.Random(seed)
        self._subscribed: set[str] = set()
        self._deleted: set[str] = set()

    def batches(self, changes: int, batch_size: int) -> Iterator[list[dict[str, Any]]]:
        """`changes` plan changes in all: one start per customer, then changes to random customers."""
        order = list(self.customers)
        self._random.shuffle(order)
        order += [self._random.choice(self.customers) for _ in range(max(0, changes - len(order)))]
        batch: list[dict[str, Any]] = []
        for customer in order:
            batch.extend(self.change(customer))
            if len(batch) >= batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def change(self, customer: str) -> list[dict[str, Any]]:
        """Change the customer's plan in Stripe; returns the events Stripe sends about the change."""
        if customer in self._deleted:
            return []
        draw = self._random.random()
        if customer in self._subscribed and draw < 0.02:
            self.stripe.delete_customer(customer)
            self._deleted.add(customer)
            return [self._subscription_event(customer, "deleted", "canceled", [])]
        if customer in self._subscribed and draw < 0.10:
            self.stripe.set_entitlements(customer, [])
            self._subscribed.discard(customer)
            return self._events(customer, "deleted", "canceled", [], both=draw < 0.06)
        plan = self._random.choice(list(PLANS))
        self.stripe.set_entitlements(customer, PLANS[plan])
        kind = "updated" if customer in self._subscribed else "created"
        self._subscribed.add(customer)
        events = self._events(customer, kind, "active", [plan], both=self._random.random() < 0.6)
        if self._random.random() < 0.03:
            events.append(event("invoice.paid", {"object": "invoice", "id": f"in_{customer}", "customer": customer}))
        return events

    def _events(self, customer: str, kind: str, status: str, plans: list[str], *, both: bool) -> list[dict[str, Any]]:
        # The summary event does not fire for every change, and a subscription event may come alone.
        subscription_event = self._subscription_event(customer, kind, status, plans)
        if both:
            return [subscription_event, self._summary(customer)]
        return [subscription_event if self._random.random() < 0.5 else self._summary(customer)]

    def _subscription_event(self, customer: str, kind: str, status: str, plans: list[str]) -> dict[str, Any]:
        prices = [(f"price_{plan}", f"prod_{plan}") for plan in plans]
        payload = subscription(f"sub_{customer.removeprefix('cus_')}", customer, status=status, prices=prices)
        return event(f"customer.subscription.{kind}", payload)

    def _summary(self, customer: str) -> dict[str, Any]:
        granted = sorted(self.stripe.truth(customer))
        return summary_event(customer, [active_entitlement(feature, key) for feature, key in granted])
