"""Customers' billing stories, played on the simulator's billing model: the model records the events Stripe
would send (the scenario's `WebhookSender` delivers them as they happen) and derives what each customer holds.

The catalog: plans basic, pro, enterprise and everything (13, later 14 features: the summary event carries 10
and says `has_more`). A third of the way in, `exports` is archived and a new feature takes its key; both stay
attached to enterprise and everything, so a subscriber renewed after that holds `exports` under two feature ids.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Iterator

from entitlement_sync.testing import FakeStripe
from entitlement_sync.testing.shapes import customer as customer_json
from entitlement_sync.testing.shapes import event

SHARES = {"delete_customer": 0.02, "cancel": 0.06, "trial_or_pause": 0.04, "renew": 0.13}  # the rest: change plan


class Workload:
    """Customers on random plans; `rounds()` changes them in Stripe, round by round."""

    def __init__(self, stripe: FakeStripe, customers: int, *, seed: int, prefix: str = "cus_e2e") -> None:
        self.stripe = stripe
        self.customers = [f"{prefix}_{n:04d}" for n in range(customers)]
        self.changes: Counter[str] = Counter()  # what was done, by kind
        self._random = random.Random(seed)
        self._live: dict[str, str] = {}  # customer -> their live subscription
        self._deleted: set[str] = set()
        self.plans = self._catalog()

    def _catalog(self) -> dict[str, str]:
        create = self.stripe.create_feature
        api, ai, self._exports, sso, audit = (
            create(key) for key in ("api_access", "ai_assistant", "exports", "sso", "audit_log")
        )
        pro = [api, ai, self._exports]
        enterprise = [*pro, sso, audit]
        everything = [*enterprise, *(create(f"addon_{n}") for n in range(8))]
        plans = {"basic": [api], "pro": pro, "enterprise": enterprise, "everything": everything}
        return {name: self.stripe.create_product(features) for name, features in plans.items()}

    def rounds(self, changes: int, events_per_round: int) -> Iterator[int]:
        """Yield each round's index, then make changes until Stripe recorded `events_per_round` more events.

        `changes` in all: one sign-up per customer first (in random order), then changes to random customers.
        """
        order = list(self.customers)
        self._random.shuffle(order)
        order += [self._random.choice(self.customers) for _ in range(max(0, changes - len(order)))]
        archive_at, index = len(order) // 3, 0
        for round_index in itertools.count():
            if index >= len(order):
                return
            yield round_index
            recorded = len(self.stripe.events.all())
            while index < len(order) and len(self.stripe.events.all()) - recorded < events_per_round:
                if index == archive_at:
                    self.reuse_a_lookup_key()
                self.change(order[index])
                index += 1

    def reuse_a_lookup_key(self) -> None:
        """Archive `exports` (it keeps granting where attached) and give its key to a new feature."""
        self.stripe.archive_feature(self._exports)
        replacement = self.stripe.create_feature("exports")
        for plan in ("enterprise", "everything"):
            self.stripe.attach_feature(self.plans[plan], replacement)
        self.changes["lookup key reused"] += 1

    def change(self, customer: str) -> None:
        """One change to the customer's billing, as a Stripe account sees them every day."""
        if customer in self._deleted:
            return
        if self._random.random() < 0.03:  # an event type the service does not handle: stored as ignored
            self.stripe.events.record(event("customer.updated", customer_json(customer)))
            self.changes["customer.updated"] += 1
        subscription = self._live.get(customer)
        kind = self._kind() if subscription else "subscribe"
        self.changes[kind] += 1
        if kind == "subscribe":
            self._subscribe(customer)
        elif kind == "delete_customer":
            self.stripe.delete_customer(customer)
            self._deleted.add(customer)
        elif kind == "cancel":
            self.stripe.cancel(self._live.pop(customer))
        elif kind == "trial_or_pause":
            self._trial_or_pause(self._live[customer])
        elif kind == "renew":
            self.stripe.renew_subscription(self._live[customer])
        else:
            self.stripe.change_products(self._live[customer], [self._random_plan()])

    def _kind(self) -> str:
        draw = self._random.random()
        for kind, share in SHARES.items():
            if draw < share:
                return kind
            draw -= share
        return "change_plan"

    def _subscribe(self, customer: str) -> None:
        trial_days = 14 if self._random.random() < 0.2 else None
        with_coupon = self._random.random() < 0.3
        subscription = self.stripe.subscribe(
            customer, [self._random_plan()], trial_days=trial_days, with_coupon=with_coupon
        )
        self._live[customer] = subscription

    def _trial_or_pause(self, subscription: str) -> None:
        """A trial ends (into `paused` half the time: no summary event), or a subscription pauses or resumes."""
        status = self.stripe.subscriptions[subscription].status
        if status == "trialing":
            self.stripe.end_trial(subscription, into=self._random.choice(["active", "paused"]))
        elif status == "paused":
            self.stripe.resume(subscription)
        else:
            self.stripe.pause(subscription)

    def _random_plan(self) -> str:
        return self.plans[self._random.choice(list(self.plans))]
