"""The simulated Stripe account: features, products, customers and subscriptions, and the events they cause.

Every change goes through `BillingModel`, which derives each customer's active entitlements the way Stripe
does and records the events Stripe would emit; listeners (the webhook sender) hear each one as it is recorded.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from . import shapes
from .events import EventLog
from .objects import GRANTING_STATUSES, STATUSES, Feature, Product, SimulationError, Subscription

SUB = "customer.subscription."


T = TypeVar("T")


class BillingModel:
    """Stripe's state for one account, changed only through these methods; thread-safe.

    `clock` returns unix seconds; pass your own to move time (trials, the 30-day event retention).
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.lock = threading.RLock()
        self.account_id = shapes.new_id("acct")
        # Answer customers never created as existing with nothing granted (a convenience for tests); False:
        # a 404 `resource_missing`, as Stripe answers (the model of another account than the customers').
        self.lenient_customers = True
        self.features: dict[str, Feature] = {}
        self.products: dict[str, Product] = {}
        self.customers: set[str] = set()
        self.deleted_customers: set[str] = set()
        self.subscriptions: dict[str, Subscription] = {}
        self.events = EventLog(lambda: int(self.clock()))
        self._overrides: dict[str, list[tuple[str, str]]] = {}
        self._granted: dict[str, list[tuple[str, str]]] = {}
        self._entitlement_ids: dict[tuple[str, str], str] = {}

    # --- the catalog ---------------------------------------------------------------------------------

    def create_feature(self, lookup_key: str, name: str | None = None, *, feature_id: str | None = None) -> str:
        """A new feature; its lookup key must not be held by another non-archived feature."""
        with self.lock:
            if any(f.active and f.lookup_key == lookup_key for f in self.features.values()):
                raise SimulationError(f"lookup key {lookup_key!r} is taken by an active feature")
            feature = Feature(feature_id or shapes.new_id("feat"), lookup_key, name or lookup_key)
            self.features[feature.id] = feature
            return feature.id

    def archive_feature(self, feature_id: str) -> None:
        """Archive for good: frees its lookup key, yet it keeps granting on products it is attached to."""
        with self.lock:
            self._feature(feature_id).active = False

    def create_product(self, feature_ids: Iterable[str] = (), *, product_id: str | None = None) -> str:
        with self.lock:
            product = Product(product_id or shapes.new_id("prod"))
            self.products[product.id] = product
            for feature_id in feature_ids:
                self.attach_feature(product.id, feature_id)
            return product.id

    def attach_feature(self, product_id: str, feature_id: str) -> None:
        """Attach a feature; existing subscribers get it at their next period (`renew_subscription`)."""
        with self.lock:
            product, feature = self._product(product_id), self._feature(feature_id)
            if not feature.active:
                raise SimulationError(f"feature {feature_id} is archived and cannot be attached")
            if feature_id not in product.feature_ids:
                product.feature_ids.append(feature_id)
                product.attachment_ids[feature_id] = shapes.new_id("prodft")

    def delete_product(self, product_id: str) -> None:
        """Delete a product no subscription uses (Stripe refuses to delete a product with prices in use);
        the API then answers 404 `resource_missing` for it."""
        with self.lock:
            self._product(product_id)
            if any(product_id in s.product_ids for s in self.subscriptions.values()):
                raise SimulationError(f"product {product_id} is used by a subscription and cannot be deleted")
            del self.products[product_id]

    def detach_feature(self, product_id: str, feature_id: str) -> None:
        with self.lock:
            product = self._product(product_id)
            if feature_id in product.feature_ids:
                product.feature_ids.remove(feature_id)
                product.attachment_ids.pop(feature_id, None)

    # --- customers and subscriptions -----------------------------------------------------------------

    def create_customer(self, customer_id: str | None = None) -> str:
        with self.lock:
            customer_id = customer_id or shapes.new_id("cus")
            self.customers.add(customer_id)
            self.deleted_customers.discard(customer_id)
            return customer_id

    def delete_customer(self, customer_id: str) -> None:
        """Delete the customer: their live subscriptions are canceled; the API then answers 404 for them."""
        with self.lock:
            for subscription in self.subscriptions_of(customer_id):
                if subscription.status != "canceled":
                    self.cancel(subscription.id)
            self._overrides.pop(customer_id, None)
            self.customers.discard(customer_id)
            self.deleted_customers.add(customer_id)
            self._announce_entitlements(customer_id)

    def subscribe(
        self,
        customer_id: str,
        product_ids: Iterable[str],
        *,
        status: str = "active",
        trial_days: int | None = None,
        with_coupon: bool = False,
    ) -> str:
        """A new subscription (`trialing` with `trial_days`); emits `customer.subscription.created`.

        `with_coupon`: discounted by Stripe's sample coupon (its `percent_off` is a float, 25.5).
        """
        with self.lock:
            if customer_id in self.deleted_customers:
                raise SimulationError(f"customer {customer_id} was deleted")
            self.customers.add(customer_id)
            now = int(self.clock())
            products = [self._product(p).id for p in product_ids]
            subscription = Subscription(shapes.new_id("sub"), customer_id, products, status, now)
            subscription.with_coupon = with_coupon
            if trial_days is not None:
                subscription.status, subscription.trial_end = "trialing", now + trial_days * 86400
            self._start_period(subscription)
            self.subscriptions[subscription.id] = subscription
            self._emit(SUB + "created", subscription)
            self._announce_entitlements(customer_id)
            return subscription.id

    def change_products(self, subscription_id: str, product_ids: Iterable[str]) -> None:
        """An upgrade or downgrade: takes effect at once, as proration does; emits `...updated`."""
        with self.lock:
            subscription = self._live_subscription(subscription_id)
            before = subscription.as_json()["items"]
            subscription.product_ids = [self._product(p).id for p in product_ids]
            self._start_period(subscription)
            self._emit(SUB + "updated", subscription, {"items": before})
            self._announce_entitlements(subscription.customer_id)

    def renew_subscription(self, subscription_id: str) -> None:
        """Start the next billing period: catalog changes since the last one now reach this subscriber."""
        with self.lock:
            subscription = self._live_subscription(subscription_id)
            self._start_period(subscription)
            self._emit(SUB + "updated", subscription, {"items": subscription.as_json()["items"]})
            self._announce_entitlements(subscription.customer_id)

    def set_status(self, subscription_id: str, status: str, *, announce: bool = True) -> None:
        """Move to any status, with the events Stripe sends for that move (`deleted`, `paused`, `resumed`...).

        `announce=False` changes entitlements without a summary event, as a trial ending into `paused` does.
        """
        if status not in STATUSES:
            raise SimulationError(f"unknown subscription status {status!r}")
        with self.lock:
            subscription = self._live_subscription(subscription_id)
            previous = subscription.status
            subscription.status = status
            if status == "canceled":
                subscription.canceled_at = int(self.clock())
                self._emit(SUB + "deleted", subscription)
            else:
                self._emit(SUB + "updated", subscription, {"status": previous})
            if status == "paused":
                self._emit(SUB + "paused", subscription)
            if previous == "paused" and status != "canceled":
                self._emit(SUB + "resumed", subscription)
            self._announce_entitlements(subscription.customer_id, send_summary=announce)

    def cancel(self, subscription_id: str) -> None:
        self.set_status(subscription_id, "canceled")

    def pause(self, subscription_id: str) -> None:
        self.set_status(subscription_id, "paused")

    def resume(self, subscription_id: str) -> None:
        self.set_status(subscription_id, "active")

    def warn_trial_ending(self, subscription_id: str) -> None:
        """`customer.subscription.trial_will_end`, which Stripe sends three days before a trial ends."""
        with self.lock:
            self._emit(SUB + "trial_will_end", self._subscription(subscription_id))

    def end_trial(self, subscription_id: str, *, into: str = "active") -> None:
        """End the trial. Into `paused` (no payment method), Stripe sends no summary event."""
        with self.lock:
            if self._subscription(subscription_id).status != "trialing":
                raise SimulationError(f"subscription {subscription_id} is not trialing")
            self.set_status(subscription_id, into, announce=into != "paused")

    def set_entitlements(self, customer_id: str, features: list[tuple[str, str]]) -> None:
        """Force the customer's entitlements to these (feature id, lookup key) pairs, over subscriptions."""
        with self.lock:
            self.create_customer(customer_id)
            self._overrides[customer_id] = list(features)
            self._announce_entitlements(customer_id)

    # --- what Stripe derives -------------------------------------------------------------------------

    def subscriptions_of(self, customer_id: str) -> list[Subscription]:
        with self.lock:
            return [s for s in self.subscriptions.values() if s.customer_id == customer_id]

    def entitled_features(self, customer_id: str) -> list[tuple[str, str]]:
        """(feature id, lookup key) the customer holds now: the features of their granting subscriptions."""
        with self.lock:
            if customer_id in self._overrides:
                return list(self._overrides[customer_id])
            feature_ids: dict[str, None] = {}
            for subscription in self.subscriptions_of(customer_id):
                if subscription.status in GRANTING_STATUSES:
                    feature_ids.update(dict.fromkeys(subscription.features_this_period))
            return [(f, self.features[f].lookup_key) for f in feature_ids]

    def active_entitlements(self, customer_id: str) -> list[dict[str, Any]]:
        """The customer's `entitlements.active_entitlement` objects; ids stable per (customer, feature)."""
        with self.lock:
            return [
                shapes.active_entitlement(feature_id, key, entitlement_id=self._entitlement_id(customer_id, feature_id))
                for feature_id, key in self.entitled_features(customer_id)
            ]

    def _entitlement_id(self, customer_id: str, feature_id: str) -> str:
        key = (customer_id, feature_id)
        if key not in self._entitlement_ids:
            self._entitlement_ids[key] = shapes.new_id("ent")
        return self._entitlement_ids[key]

    # --- internals -----------------------------------------------------------------------------------

    def _start_period(self, subscription: Subscription) -> None:
        features = (f for product in subscription.product_ids for f in self.products[product].feature_ids)
        subscription.features_this_period = list(dict.fromkeys(features))
        subscription.period_start = int(self.clock())

    def _announce_entitlements(self, customer_id: str, *, send_summary: bool = True) -> None:
        now = self.entitled_features(customer_id)
        if now == self._granted.get(customer_id, []):
            return
        self._granted[customer_id] = now
        if send_summary:
            entitlements = self.active_entitlements(customer_id)
            # Stripe's own summary fixture shows each entitlement's feature expanded.
            features = {f.id: f.as_json() for f in self.features.values()}
            summary = shapes.summary_event(customer_id, entitlements, features=features, created=int(self.clock()))
            self.events.record(summary)

    def _emit(self, event_type: str, subscription: Subscription, previous: dict[str, Any] | None = None) -> None:
        body = subscription.as_json()
        self.events.record(shapes.event(event_type, body, created=int(self.clock()), previous_attributes=previous))

    def _feature(self, feature_id: str) -> Feature:
        return _found(self.features, feature_id, "feature")

    def _product(self, product_id: str) -> Product:
        return _found(self.products, product_id, "product")

    def _subscription(self, subscription_id: str) -> Subscription:
        return _found(self.subscriptions, subscription_id, "subscription")

    def _live_subscription(self, subscription_id: str) -> Subscription:
        subscription = self._subscription(subscription_id)
        if subscription.status == "canceled":
            raise SimulationError(f"subscription {subscription_id} is canceled for good")
        return subscription


def _found(table: dict[str, T], key: str, kind: str) -> T:
    if key not in table:
        raise SimulationError(f"no such {kind}: {key!r}")
    return table[key]
