"""Effective access (`effective_access`), its history (`effective_access_changes`), and the policy's inputs
gathered from the other tables."""

from __future__ import annotations

import json
from datetime import datetime
from functools import cache
from typing import Any, Protocol, cast

from sqlalchemy import Table, bindparam, delete, insert, select
from sqlalchemy.orm import Session, make_transient_to_detached

from ..models import (
    AccessOverride,
    EffectiveAccess,
    EffectiveAccessChange,
    Entitlement,
    Subscription,
)
from . import feed
from ._sql import dialect_of, flushed_connection, pg_rows, upsert_for


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
