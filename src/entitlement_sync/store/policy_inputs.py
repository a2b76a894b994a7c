"""The policy's inputs gathered from the other tables (the access table, subscriptions, the catalog, overrides),
with the customer's effective rows: what a recompute reads, in one statement on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..models import AccessOverride, CustomerSyncState, Entitlement, Feature, ProductFeature, Subscription
from ..policy import CatalogLink, Override, PolicyInputs, SubscriptionState
from ..ports import ActiveEntitlement
from ._sql import pg_rows
from .effective import EffectiveRow, rows_of


def inputs_and_rows(session: Session, customer_id: str) -> tuple[PolicyInputs, dict[str, EffectiveRow]]:
    """The policy's inputs and the customer's effective rows: what a recompute reads (one statement on
    PostgreSQL)."""
    if session.get_bind().dialect.name == "postgresql":
        return _read_in_one_statement(session, customer_id)
    return policy_inputs(session, customer_id), rows_of(session, customer_id)


def policy_inputs(session: Session, customer_id: str) -> PolicyInputs:
    if session.get_bind().dialect.name == "postgresql":
        return _read_in_one_statement(session, customer_id)[0]
    entitlements = session.execute(
        select(Entitlement.entitlement_id, Entitlement.feature_id, Entitlement.lookup_key)
        .where(Entitlement.customer_id == customer_id)
        .order_by(Entitlement.lookup_key, Entitlement.feature_id)
    )
    subscriptions = [
        SubscriptionState(row.id, row.status, tuple(row.product_ids or ()), row.past_due_since)
        for row in session.scalars(
            select(Subscription).where(Subscription.customer_id == customer_id).order_by(Subscription.id)
        )
    ]
    products = {product for s in subscriptions for product in s.product_ids}
    return PolicyInputs(
        entitlements=tuple(ActiveEntitlement(*row) for row in entitlements),
        subscriptions=tuple(subscriptions),
        catalog=catalog_links(session, products),
        overrides=tuple(overrides_in_force(session, customer_id)),
        synced=session.scalar(select(CustomerSyncState.synced_at).where(CustomerSyncState.customer_id == customer_id))
        is not None,
    )


# PostgreSQL: every input of the policy in one round trip (it runs in the transaction of every write). The
# inputs other than the access table (and the effective rows) are columns of their own: the writer of the access
# table reads them with what the rows hold, before it writes (`PolicyRead`).
_ENTITLEMENTS_JSON = (
    "(SELECT json_agg(json_build_array(entitlement_id, feature_id, lookup_key) ORDER BY lookup_key, feature_id)"
    "  FROM entitlements WHERE customer_id = %(customer)s)"
)
OTHER_INPUTS_JSON = (
    " (SELECT json_agg(json_build_array(id, status, product_ids, past_due_since) ORDER BY id)"
    "  FROM subscriptions WHERE customer_id = %(customer)s),"
    " (SELECT json_agg(json_build_array(pf.product_id, pf.feature_id, f.lookup_key)"
    "  ORDER BY pf.product_id, pf.feature_id)"
    "  FROM product_features pf JOIN features f ON f.id = pf.feature_id WHERE pf.product_id IN"
    "  (SELECT json_array_elements_text(product_ids) FROM subscriptions WHERE customer_id = %(customer)s)),"
    " (SELECT json_agg(json_build_array(id, lookup_key, kind, expires_at, created_by, reason) ORDER BY id)"
    "  FROM access_overrides WHERE customer_id = %(customer)s AND revoked_at IS NULL),"
    " (SELECT json_agg(json_build_array(lookup_key, granted, reason, sources, since, computed_at, review_at))"
    "  FROM effective_access WHERE customer_id = %(customer)s)"
)
_INPUTS_AND_ROWS = (
    f"SELECT {_ENTITLEMENTS_JSON},"
    " EXISTS (SELECT FROM customer_sync_state WHERE customer_id = %(customer)s AND synced_at IS NOT NULL),"
    f"{OTHER_INPUTS_JSON}"
)


@dataclass(frozen=True)
class PolicyRead:
    """What a recompute reads besides the access table: the other inputs, and the effective rows."""

    inputs: PolicyInputs  # no entitlements, not synced: `with_access` adds what the access table holds
    rows: dict[str, EffectiveRow]

    def with_access(
        self, entitlements: Iterable[ActiveEntitlement], synced: bool
    ) -> tuple[PolicyInputs, dict[str, EffectiveRow]]:
        """The whole of a recompute's read, the access table holding `entitlements` (one per feature)."""
        return replace(self.inputs, entitlements=_in_key_order(entitlements), synced=synced), self.rows


def _in_key_order(entitlements: Iterable[ActiveEntitlement]) -> tuple[ActiveEntitlement, ...]:
    """By lookup key, then feature, in Python's order on every database (PostgreSQL's collation may differ):
    a decision lists its sources in this order, and the same inputs must give the same row however read."""
    return tuple(sorted(entitlements, key=lambda item: (item.lookup_key, item.feature_id)))


def policy_read_from(subscriptions: Any, catalog: Any, overrides: Any, effective: Any) -> PolicyRead:
    """A `PolicyRead` from the columns of `OTHER_INPUTS_JSON`, in that order."""
    rows: dict[str, EffectiveRow] = {
        key: _EffectiveRead(key, granted, reason, sources, _at(since), _at(computed), _moment(review))
        for key, granted, reason, sources, since, computed, review in effective or ()
    }
    inputs = PolicyInputs(
        subscriptions=tuple(
            SubscriptionState(id_, status, tuple(products or ()), _moment(since))
            for id_, status, products, since in subscriptions or ()
        ),
        catalog=tuple(CatalogLink(*item) for item in catalog or ()),
        overrides=tuple(
            Override(id_, key, kind, _moment(expires), by, reason)
            for id_, key, kind, expires, by, reason in overrides or ()
        ),
    )
    return PolicyRead(inputs, rows)


@dataclass(frozen=True)
class _EffectiveRead:
    """An effective row as read in JSON (EffectiveRow)."""

    lookup_key: str
    granted: bool
    reason: str
    sources: list[dict[str, str]]
    since: datetime
    computed_at: datetime
    review_at: datetime | None


def _read_in_one_statement(session: Session, customer_id: str) -> tuple[PolicyInputs, dict[str, EffectiveRow]]:
    return inputs_and_rows_from(pg_rows(session, *inputs_and_rows_statement(customer_id)))


def inputs_and_rows_statement(customer_id: str) -> tuple[str, dict[str, Any]]:
    """PostgreSQL: `inputs_and_rows`' statement, for a caller that sends it with others (`_sql.pg_rows_together`)."""
    return _INPUTS_AND_ROWS, {"customer": customer_id}


def inputs_and_rows_from(rows: list[tuple[Any, ...]]) -> tuple[PolicyInputs, dict[str, EffectiveRow]]:
    """`inputs_and_rows` from the rows of its statement."""
    ((entitlements, synced, *others),) = rows
    read = policy_read_from(*others)
    return read.with_access((ActiveEntitlement(*item) for item in entitlements or ()), bool(synced))


def _at(value: str) -> datetime:
    """A timestamp as PostgreSQL writes it in JSON (ISO 8601 with its offset), as an aware UTC datetime."""
    return datetime.fromisoformat(value).astimezone(UTC)


def _moment(value: str | None) -> datetime | None:
    """`_at`, for a column that may be null."""
    return _at(value) if value is not None else None


def catalog_links(session: Session, product_ids: set[str]) -> tuple[CatalogLink, ...]:
    if not product_ids:
        return ()
    statement = (
        select(ProductFeature.product_id, ProductFeature.feature_id, Feature.lookup_key)
        .join(Feature, Feature.id == ProductFeature.feature_id)
        .where(ProductFeature.product_id.in_(sorted(product_ids)))
        .order_by(ProductFeature.product_id, ProductFeature.feature_id)
    )
    return tuple(CatalogLink(*row) for row in session.execute(statement))


def overrides_in_force(session: Session, customer_id: str) -> list[Override]:
    """The customer's grants and denials not revoked (expired ones included: the policy skips them)."""
    statement = select(AccessOverride).where(
        AccessOverride.customer_id == customer_id, AccessOverride.revoked_at.is_(None)
    )
    return [as_override(row) for row in session.scalars(statement.order_by(AccessOverride.id))]


def as_override(row: AccessOverride) -> Override:
    return Override(row.id, row.lookup_key, row.kind, row.expires_at, row.created_by, row.reason)
