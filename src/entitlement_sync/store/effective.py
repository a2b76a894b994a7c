"""Effective access (`effective_access`), its history (`effective_access_changes`), and the policy's inputs
gathered from the other tables."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import cache
from typing import Any, Protocol, cast

from sqlalchemy import Table, bindparam, delete, insert, select
from sqlalchemy.orm import Session, make_transient_to_detached

from ..models import (
    AccessOverride,
    CustomerSyncState,
    EffectiveAccess,
    EffectiveAccessChange,
    Entitlement,
    Feature,
    ProductFeature,
    Subscription,
)
from ..policy import CatalogLink, Override, PolicyInputs, SubscriptionState
from ..ports import ActiveEntitlement
from . import feed
from ._sql import dialect_of, flushed_connection, pg_rows, upsert_for


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
    (row,) = pg_rows(session, _INPUTS_AND_ROWS, {"customer": customer_id})
    entitlements, synced, *others = row
    read = policy_read_from(*others)
    return read.with_access((ActiveEntitlement(*item) for item in entitlements or ()), bool(synced))


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value).astimezone(UTC)


def _moment(value: str | None) -> datetime | None:
    """A timestamp as PostgreSQL writes it in JSON (ISO 8601 with its offset), as an aware UTC datetime."""
    return datetime.fromisoformat(value).astimezone(UTC) if value is not None else None


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


class EffectiveRow(Protocol):
    """One of the customer's effective rows, as read (a plain result row: no object to track)."""

    @property
    def lookup_key(self) -> str: ...
    @property
    def granted(self) -> bool: ...
    @property
    def reason(self) -> str: ...
    @property
    def sources(self) -> list[dict[str, str]]: ...
    @property
    def since(self) -> datetime: ...
    @property
    def computed_at(self) -> datetime: ...
    @property
    def review_at(self) -> datetime | None: ...


def rows_of(session: Session, customer_id: str) -> dict[str, EffectiveRow]:
    rows = flushed_connection(session).execute(_EFFECTIVE_ROWS, {"customer": customer_id})
    return {row.lookup_key: row for row in rows}


_EFFECTIVE = cast(Table, EffectiveAccess.__table__)
_EFFECTIVE_ROWS = select(_EFFECTIVE).where(_EFFECTIVE.c.customer_id == bindparam("customer"))
_DELETE_EFFECTIVE = delete(_EFFECTIVE).where(
    _EFFECTIVE.c.customer_id == bindparam("customer"), _EFFECTIVE.c.lookup_key.in_(bindparam("keys", expanding=True))
)


def save(
    session: Session, customer_id: str, rows: list[dict[str, Any]], deleted: list[str], changes: list[dict[str, Any]]
) -> list[EffectiveAccessChange]:
    """`write_rows`, then `add_changes`: one statement on PostgreSQL (none when nothing moved)."""
    if session.get_bind().dialect.name != "postgresql":
        write_rows(session, customer_id, rows, deleted)
        return add_changes(session, changes)
    if not (rows or deleted or changes):
        return []
    ids = pg_rows(session, _SAVE, save_values(customer_id, rows, deleted, changes))
    return recorded(session, ids, changes)


def save_values(
    customer_id: str, rows: list[dict[str, Any]], deleted: list[str], changes: list[dict[str, Any]]
) -> dict[str, Any]:
    """The parameters of `SAVE_CTES` (PostgreSQL)."""
    return {
        "customer": customer_id,
        "deleted": deleted,
        "rows": json.dumps([_json_ready(row) for row in rows]),
        "changes": json.dumps([{**_json_ready(change), "place": n} for n, change in enumerate(changes)]),
    }


def recorded(
    session: Session, ids: Any, changes: list[dict[str, Any]], *, published: bool = False
) -> list[EffectiveAccessChange]:
    """The changes `SAVE_CTES` recorded, from the (lookup_key, id) pairs its `recorded` part returned.
    `published`: the same statement numbered them into the feed (`feed.publish_parts`)."""
    by_key = {key: change_id for key, change_id in ids or ()}
    return [_recorded(session, by_key[change["lookup_key"]], change, published) for change in changes]


def _json_ready(values: dict[str, Any]) -> dict[str, Any]:
    return {name: value.isoformat() if isinstance(value, datetime) else value for name, value in values.items()}


# PostgreSQL: `write_rows` and `add_changes` as parts of one WITH statement (`save_values`); `recorded` returns
# each change's (lookup_key, id).
SAVE_CTES = (
    "gone AS (DELETE FROM effective_access WHERE customer_id = %(customer)s AND lookup_key = ANY(%(deleted)s)),"
    " upserted AS (INSERT INTO effective_access (customer_id, lookup_key, granted, reason, sources, since,"
    " computed_at, review_at) SELECT %(customer)s, r.lookup_key, r.granted, r.reason, r.sources, r.since,"
    " r.computed_at, r.review_at FROM json_to_recordset(%(rows)s::json) AS r(lookup_key text, granted boolean,"
    " reason text, sources json, since timestamptz, computed_at timestamptz, review_at timestamptz)"
    " ON CONFLICT (customer_id, lookup_key) DO UPDATE SET granted = EXCLUDED.granted, reason = EXCLUDED.reason,"
    " sources = EXCLUDED.sources, since = EXCLUDED.since, computed_at = EXCLUDED.computed_at,"
    " review_at = EXCLUDED.review_at),"
    " recorded AS (INSERT INTO effective_access_changes (customer_id, lookup_key, change, granted, reason,"
    " previous_reason, sources, cause, changed_at) SELECT %(customer)s, c.lookup_key, c.change, c.granted, c.reason,"
    " c.previous_reason, c.sources, c.cause, c.changed_at FROM json_to_recordset(%(changes)s::json) AS c(place"
    " integer, lookup_key text, change text, granted boolean, reason text, previous_reason text, sources json,"
    " cause text, changed_at timestamptz) ORDER BY c.place"
    " RETURNING lookup_key, id)"
)
_SAVE = f"WITH {SAVE_CTES} SELECT lookup_key, id FROM recorded"


def write_rows(session: Session, customer_id: str, rows: list[dict[str, Any]], deleted: list[str]) -> None:
    """Make these effective rows of the customer what `rows` say (whole rows, upserted) and delete `deleted`:
    plain statements, one of each at most, instead of the unit of work on the path of every write."""
    connection = flushed_connection(session)
    if rows:
        connection.execute(_upsert_effective(dialect_of(session)), rows)
    if deleted:
        connection.execute(_DELETE_EFFECTIVE, {"customer": customer_id, "keys": deleted})


@cache
def _upsert_effective(dialect: str) -> Any:
    statement = upsert_for(dialect, EffectiveAccess)
    updated = {
        name: statement.excluded[name] for name in ("granted", "reason", "sources", "since", "computed_at", "review_at")
    }
    return statement.on_conflict_do_update(index_elements=["customer_id", "lookup_key"], set_=updated)


def add_changes(session: Session, rows: list[dict[str, Any]]) -> list[EffectiveAccessChange]:
    """Append these changes to the history in one statement; returns them as objects with their ids.

    A plain INSERT: the unit of work's flush costs more than the statement on the path of every write. The
    objects are handed back detached with their ids, as if loaded: an outbox row that names one makes the
    session take it as it is (no second INSERT). The feed numbers them at commit, those a rolled-back SAVEPOINT
    removed excepted (store/feed.py checks the rows).
    """
    if not rows:
        return []
    ids = flushed_connection(session).execute(_INSERT_CHANGES, rows).scalars().all()
    return [_recorded(session, change_id, values) for change_id, values in zip(ids, rows, strict=True)]


def _recorded(
    session: Session, change_id: int, values: dict[str, Any], published: bool = False
) -> EffectiveAccessChange:
    change = EffectiveAccessChange(id=change_id, **values)
    make_transient_to_detached(change)
    if not published:
        feed.track(session, change)  # numbered into the access feed when the transaction commits
    return change


_INSERT_CHANGES = insert(EffectiveAccessChange).returning(EffectiveAccessChange.id, sort_by_parameter_order=True)


def changes_of(session: Session, customer_id: str, lookup_key: str | None, limit: int) -> list[EffectiveAccessChange]:
    statement = select(EffectiveAccessChange).where(EffectiveAccessChange.customer_id == customer_id)
    if lookup_key is not None:
        statement = statement.where(EffectiveAccessChange.lookup_key == lookup_key)
    return list(session.scalars(statement.order_by(EffectiveAccessChange.id.desc()).limit(limit)))


def customers_due_for_review(session: Session, now: datetime, limit: int) -> list[str]:
    statement = select(EffectiveAccess.customer_id).where(EffectiveAccess.review_at <= now).distinct()
    return list(session.scalars(statement.order_by(EffectiveAccess.customer_id).limit(limit)))


def customers_on(session: Session, product_ids: set[str], feature_ids: set[str]) -> set[str]:
    """Customers whose subscriptions name one of these products, or who hold one of these features."""
    customers = set(session.scalars(select(Entitlement.customer_id).where(Entitlement.feature_id.in_(feature_ids))))
    for customer_id, products in session.execute(select(Subscription.customer_id, Subscription.product_ids)):
        if product_ids.intersection(products or ()):
            customers.add(customer_id)
    return customers


def customers_with_rows(session: Session) -> set[str]:
    """Customers with an effective row or an override: with the synced ones, everyone a recompute concerns."""
    rows = set(session.scalars(select(EffectiveAccess.customer_id).distinct()))
    return rows | set(session.scalars(select(AccessOverride.customer_id).distinct()))
