"""Use case for ops: catalog drift. Stripe's docs say existing subscriptions pick up a product's feature
changes only at their next billing period, and no summary event marks the change: so the catalog (now) and
Stripe's active entitlements (as of each customer's period) can disagree. This finds where, from the local
tables alone (`features sync` first): no call to Stripe.

Features are keyed by id, never by lookup key: an archived feature and its successor under the same key are
two rows here, as they are in Stripe.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from . import store
from .db import SessionFactory
from .policy import STRIPE_GRANTING_STATUSES


@dataclass(frozen=True)
class FeatureRef:
    feature: str
    lookup_key: str
    products: list[str] = field(default_factory=list)  # the subscribed products that carry it (missing only)


@dataclass(frozen=True)
class CustomerDrift:
    customer: str
    missing: list[FeatureRef]  # their products carry it now; Stripe's list does not (yet)
    extra: list[FeatureRef]  # Stripe's list holds it; none of their subscribed products carries it now


@dataclass(frozen=True)
class FeatureCount:
    feature: str
    lookup_key: str
    missing: int
    extra: int


@dataclass
class DriftReport:
    catalog_links: int  # 0: the catalog was never synced, and nothing can be compared
    customers_checked: int = 0
    customers: list[CustomerDrift] = field(default_factory=list)
    by_feature: list[FeatureCount] = field(default_factory=list)
    by_product: dict[str, int] = field(default_factory=dict)  # product -> customers missing one of its features


class CatalogDrift:
    def __init__(self, new_session: SessionFactory) -> None:
        self._new_session = new_session

    def report(self) -> DriftReport:
        with self._new_session() as session:
            links = store.catalog.all_links(session)
            subscriptions = store.subscriptions.all_subscriptions(session)
            held = store.subscriptions.held_features(session)
        report = DriftReport(catalog_links=len(links))
        if not links:
            return report
        carried_by: dict[str, dict[str, tuple[str, list[str]]]] = {}  # customer -> feature -> (key, products)
        keys = {feature: key for _, feature, key in links}
        for customer, status, products in subscriptions:
            carried = carried_by.setdefault(customer, {})
            if status not in STRIPE_GRANTING_STATUSES:
                continue
            for product, feature, key in links:
                if product in products:
                    carried.setdefault(feature, (key, []))[1].append(product)
        holding: dict[str, dict[str, str]] = {}
        for customer, feature, key in held:
            holding.setdefault(customer, {})[feature] = key
            keys.setdefault(feature, key)
        for customer in sorted(carried_by):  # customers with no subscription mirrored: their products are unknown
            report.customers_checked += 1
            drift = _drift_of(customer, carried_by[customer], holding.get(customer, {}))
            if drift.missing or drift.extra:
                report.customers.append(drift)
        _count(report, keys)
        return report


def _drift_of(customer: str, carried: dict[str, tuple[str, list[str]]], held: dict[str, str]) -> CustomerDrift:
    missing = [
        FeatureRef(feature, key, sorted(set(products)))
        for feature, (key, products) in sorted(carried.items())
        if feature not in held
    ]
    extra = [FeatureRef(feature, key) for feature, key in sorted(held.items()) if feature not in carried]
    return CustomerDrift(customer, missing, extra)


def _count(report: DriftReport, keys: dict[str, str]) -> None:
    missing = Counter(ref.feature for drift in report.customers for ref in drift.missing)
    extra = Counter(ref.feature for drift in report.customers for ref in drift.extra)
    report.by_feature = [
        FeatureCount(feature, keys.get(feature, ""), missing[feature], extra[feature])
        for feature in sorted(missing.keys() | extra.keys())
    ]
    products = Counter(
        product
        for drift in report.customers
        for product in {product for ref in drift.missing for product in ref.products}
    )
    report.by_product = dict(sorted(products.items()))
