"""The feature catalog (`features`, `product_features`): which features exist and which product grants each."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from ..models import Feature, ProductFeature
from ..ports import CatalogFeature, ProductFeatureLink


def all_features(session: Session) -> list[Feature]:
    return list(session.scalars(select(Feature).order_by(Feature.lookup_key, Feature.id)))


def feature_names(session: Session, feature_ids: Iterable[str]) -> dict[str, str]:
    rows = session.execute(select(Feature.id, Feature.name).where(Feature.id.in_(list(feature_ids))))
    return {feature_id: name for feature_id, name in rows}


def feature_changes(session: Session, features: Sequence[CatalogFeature]) -> tuple[int, int]:
    """(new, changed) counts that `upsert_features` would report, read only: the dry run's answer."""
    existing = {row.id: row for row in session.scalars(select(Feature))}
    new = sum(item.id not in existing for item in features)
    changed = sum(item.id in existing and _differs(existing[item.id], item) for item in features)
    return new, changed


def upsert_features(session: Session, features: Sequence[CatalogFeature], now: datetime) -> tuple[int, int]:
    """Write the catalog; returns (new, changed) counts."""
    existing = {row.id: row for row in session.scalars(select(Feature))}
    new = changed = 0
    for item in features:
        row = existing.get(item.id)
        if row is None:
            row = Feature(id=item.id, livemode=item.livemode)
            session.add(row)
            new += 1
        elif _differs(row, item):
            changed += 1
        row.lookup_key, row.name, row.active, row.synced_at = item.lookup_key, item.name, item.active, now
    return new, changed


def _differs(row: Feature, item: CatalogFeature) -> bool:
    return (row.lookup_key, row.name, row.active) != (item.lookup_key, item.name, item.active)


def linked_product_ids(session: Session) -> set[str]:
    """Products already linked to a feature."""
    return set(session.scalars(select(ProductFeature.product_id)))


def product_feature_changes(session: Session, product_id: str, links: Sequence[ProductFeatureLink]) -> tuple[int, int]:
    """(added, removed) counts that `replace_product_features` would report, read only."""
    current = _linked_feature_ids(session, product_id)
    wanted = {link.feature.id for link in links}
    return len(wanted - current), len(current - wanted)


def _linked_feature_ids(session: Session, product_id: str) -> set[str]:
    return set(session.scalars(select(ProductFeature.feature_id).where(ProductFeature.product_id == product_id)))


def replace_product_features(
    session: Session, product_id: str, links: Sequence[ProductFeatureLink], now: datetime
) -> tuple[list[str], list[str]]:
    """Make the product's links exactly these; returns the feature ids (added, removed)."""
    current = _linked_feature_ids(session, product_id)
    wanted = {link.feature.id: link for link in links}
    removed = current - wanted.keys()
    if removed:
        session.execute(
            delete(ProductFeature).where(
                ProductFeature.product_id == product_id, ProductFeature.feature_id.in_(list(removed))
            )
        )
    added = [link for feature_id, link in wanted.items() if feature_id not in current]
    session.add_all(
        ProductFeature(product_id=product_id, feature_id=link.feature.id, product_feature_id=link.id, synced_at=now)
        for link in added
    )
    return [link.feature.id for link in added], sorted(removed)


def products_by_feature(session: Session) -> dict[str, list[str]]:
    granted_by: dict[str, list[str]] = {}
    statement = select(ProductFeature.feature_id, ProductFeature.product_id).order_by(ProductFeature.product_id)
    for feature_id, product_id in session.execute(statement):
        granted_by.setdefault(feature_id, []).append(product_id)
    return granted_by


def all_links(session: Session) -> list[tuple[str, str, str]]:
    """Every (product, feature, lookup key) link of the catalog."""
    statement = (
        select(ProductFeature.product_id, ProductFeature.feature_id, Feature.lookup_key)
        .join(Feature, Feature.id == ProductFeature.feature_id)
        .order_by(ProductFeature.product_id, ProductFeature.feature_id)
    )
    return [(product, feature, key) for product, feature, key in session.execute(statement)]
