"""Use cases: the feature catalog, kept locally so that ops and internal services can name features and see
which product grants each one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

from sqlalchemy.orm import Session

from . import store
from .db import SessionFactory, transaction
from .effective import AccessPolicy
from .logs import get_logger
from .pacing import with_retries
from .policy import PolicyRules
from .ports import CatalogFeature, Clock, ProductFeatureLink, Retry, StripeReader

log = get_logger(__name__)


@dataclass
class CatalogReport:
    dry_run: bool
    features: int = 0
    archived: int = 0
    new_features: int = 0
    changed_features: int = 0
    products: int = 0
    links_added: int = 0
    links_removed: int = 0
    access_changes: int = 0  # effective access granted, revoked or re-reasoned by the catalog's change


@dataclass(frozen=True)
class FeatureListing:
    id: str
    lookup_key: str
    name: str
    active: bool
    products: list[str]


class Catalog:
    def __init__(
        self,
        new_session: SessionFactory,
        gateway: StripeReader,
        clock: Clock,
        retry: Retry[Any] = with_retries,
        access_policy: AccessPolicy | None = None,
    ) -> None:
        self._new_session = new_session
        self._gateway = gateway
        self._clock = clock
        self._retry = retry
        self._policy = access_policy or AccessPolicy(new_session, PolicyRules(), clock)

    def sync(self, extra_products: Iterable[str] = (), *, dry_run: bool = False) -> CatalogReport:
        """Fetch every feature and, for every product we know of (plus `extra_products`), its features."""
        features: list[CatalogFeature] = self._retry(self._gateway.list_features)
        with self._new_session() as session:
            known = store.catalog.linked_product_ids(session) | store.subscriptions.product_ids_in_use(session)
            products = sorted(known | set(extra_products))
        links = {product: self._retry(partial(self._gateway.list_product_features, product)) for product in products}
        report = CatalogReport(
            dry_run=dry_run,
            features=len(features),
            products=len(products),
            archived=sum(not feature.active for feature in features),
        )
        # A product's features arrive expanded: features the catalog listing missed are still recorded.
        every_feature = {feature.id: feature for feature in features}
        for product_links in links.values():
            every_feature.update({link.feature.id: link.feature for link in product_links})
        if dry_run:  # reads only: not even a write rolled back afterwards (it would still take locks)
            with self._new_session() as session:
                self._preview(session, list(every_feature.values()), links, report)
        else:
            with transaction(self._new_session) as session:
                self._apply(session, list(every_feature.values()), links, report)
        log.info("features.synced", features=report.features, products=report.products, dry_run=dry_run)
        return report

    def _apply(
        self,
        session: Session,
        features: list[CatalogFeature],
        links: dict[str, list[ProductFeatureLink]],
        report: CatalogReport,
    ) -> None:
        report.new_features, report.changed_features = store.catalog.upsert_features(session, features, self._clock())
        products: set[str] = set()
        moved: set[str] = set()
        for product, product_links in links.items():
            added, removed = store.catalog.replace_product_features(session, product, product_links, self._clock())
            report.links_added += len(added)
            report.links_removed += len(removed)
            if added or removed:
                products.add(product)
                moved.update(added + removed)
        # The catalog is an input of the policy (catalog grants; which subscription carries a feature):
        # whoever subscribes to a changed product, or holds a moved feature, is recomputed in this transaction.
        if products:
            customers = store.effective.customers_on(session, products, moved)
            report.access_changes = len(self._policy.recompute_many(session, customers, "catalog:sync"))

    def _preview(
        self,
        session: Session,
        features: list[CatalogFeature],
        links: dict[str, list[ProductFeatureLink]],
        report: CatalogReport,
    ) -> None:
        report.new_features, report.changed_features = store.catalog.feature_changes(session, features)
        for product, product_links in links.items():
            added, removed = store.catalog.product_feature_changes(session, product, product_links)
            report.links_added += added
            report.links_removed += removed

    def list_features(self) -> list[FeatureListing]:
        with self._new_session() as session:
            granted_by = store.catalog.products_by_feature(session)
            return [
                FeatureListing(row.id, row.lookup_key, row.name, row.active, granted_by.get(row.id, []))
                for row in store.catalog.all_features(session)
            ]
