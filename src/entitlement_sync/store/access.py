"""The access table (`entitlements`) and its history (`access_changes`); the per-customer ordering that guards
it is `sync_state`'s."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Connection, bindparam, delete, exists, insert, select, update
from sqlalchemy.orm import Session

from ..models import AccessChange, AccessChangeKind, CustomerSyncState, Entitlement
from ..ports import ActiveEntitlement
from ._sql import dialect_of

# --- the rows --------------------------------------------------------------------------------------------


def rows_from_json(value: list[list[str]] | None) -> list[HeldRow]:
    """The customer's rows as `json_agg(json_build_array(feature_id, lookup_key, entitlement_id))` reads them."""
    return [_Row(*item) for item in value or ()]


ROWS_JSON = "(SELECT json_agg(json_build_array(feature_id, lookup_key, entitlement_id)) FROM entitlements"


@dataclass(frozen=True)
class _Row:
    feature_id: str
    lookup_key: str
    entitlement_id: str


class HeldRow(Protocol):
    """One of the customer's rows, as an ORM object or a plain result row."""

    @property
    def feature_id(self) -> str: ...

    @property
    def lookup_key(self) -> str: ...

    @property
    def entitlement_id(self) -> str: ...


@dataclass(frozen=True)
class AccessDiff:
    granted: list[ActiveEntitlement]
    revoked: list[HeldRow]

    @property
    def changed(self) -> bool:
        return bool(self.granted or self.revoked)


def diff_entitlements(current: Sequence[HeldRow], fetched: Sequence[ActiveEntitlement]) -> AccessDiff:
    """What replacing `current` with `fetched` grants and revokes; the one diff for a sync and its dry run."""
    have = {row.feature_id for row in current}
    wanted = {item.feature_id: item for item in fetched}
    return AccessDiff(
        granted=[item for feature, item in wanted.items() if feature not in have],
        revoked=[row for row in current if row.feature_id not in wanted],
    )


def replace_entitlements(
    session: Session,
    customer_id: str,
    fetched: Sequence[ActiveEntitlement],
    event_id: str | None,
    now: datetime,
    rows: Sequence[HeldRow] | None = None,
) -> AccessDiff:
    """Make the customer's rows exactly `fetched`, and write each grant and revoke to the history. `rows`: the
    rows the customer holds, when the caller read them already in this transaction, under the customer's lock.

    Plain SQL on the session's connection, statements built once: this runs for every event the workers apply.
    """
    connection = session.connection()
    diff = diff_and_move(session, customer_id, fetched, rows)
    if not diff.changed:
        return diff
    if dialect_of(session) == "postgresql":
        connection.exec_driver_sql(_WRITE_DIFF, diff_values(customer_id, diff, event_id, now))
        return diff
    for row in diff.revoked:
        connection.execute(_DELETE_ROW, {"customer": customer_id, "feature": row.feature_id})
    if diff.granted:
        granted = [
            {
                "customer_id": customer_id,
                "feature_id": item.feature_id,
                "lookup_key": item.lookup_key,
                "entitlement_id": item.id,
                "granted_at": now,
            }
            for item in diff.granted
        ]
        connection.execute(insert(Entitlement), granted)
    history = [(item.feature_id, item.lookup_key, AccessChangeKind.GRANTED) for item in diff.granted]
    history += [(row.feature_id, row.lookup_key, AccessChangeKind.REVOKED) for row in diff.revoked]
    if history:
        changes = [
            {
                "customer_id": customer_id,
                "feature_id": feature_id,
                "lookup_key": lookup_key,
                "change": str(change),
                "changed_at": now,
                "event_id": event_id,
            }
            for feature_id, lookup_key, change in history
        ]
        connection.execute(insert(AccessChange), changes)
    return diff


def _move_kept_rows(
    connection: Connection, customer_id: str, current: dict[str, Any], fetched: Sequence[ActiveEntitlement]
) -> None:
    for item in fetched:  # a kept feature whose key or entitlement id moved on (key reuse after archiving)
        held = current.get(item.feature_id)
        if held is not None and (held.lookup_key, held.entitlement_id) != (item.lookup_key, item.id):
            moved = {"customer": customer_id, "feature": item.feature_id, "key": item.lookup_key, "ent": item.id}
            connection.execute(_MOVE_ROW, moved)


def diff_and_move(
    session: Session, customer_id: str, fetched: Sequence[ActiveEntitlement], rows: Sequence[HeldRow] | None
) -> AccessDiff:
    """What replacing the customer's rows (`rows`, or read now) with `fetched` grants and revokes; kept rows
    whose key or entitlement id moved on are updated now (rare: key reuse after archiving)."""
    connection = session.connection()
    if rows is None:
        rows = list(connection.execute(_ROWS, {"customer": customer_id}))
    current = {row.feature_id: row for row in rows}
    _move_kept_rows(connection, customer_id, current, fetched)
    return diff_entitlements(list(current.values()), fetched)


def diff_values(customer_id: str, diff: AccessDiff, event_id: str | None, now: datetime) -> dict[str, Any]:
    """The parameters of `DIFF_CTES`: the revokes, the grants and their history."""
    granted = [{"feature": item.feature_id, "key": item.lookup_key, "ent": item.id} for item in diff.granted]
    history = [{"feature": item.feature_id, "key": item.lookup_key, "change": "granted"} for item in diff.granted]
    history += [{"feature": row.feature_id, "key": row.lookup_key, "change": "revoked"} for row in diff.revoked]
    return {
        "customer": customer_id,
        "revoked": [row.feature_id for row in diff.revoked],
        "granted": json.dumps(granted),
        "history": json.dumps(history),
        "now": now,
        "event": event_id,
    }


# PostgreSQL: the revokes, the grants and their history, as parts of one WITH statement (`diff_values`).
DIFF_CTES = (
    "revoked AS (DELETE FROM entitlements WHERE customer_id = %(customer)s AND feature_id = ANY(%(revoked)s)),"
    " granted AS (INSERT INTO entitlements (customer_id, feature_id, lookup_key, entitlement_id, granted_at)"
    " SELECT %(customer)s, g.feature, g.key, g.ent, %(now)s FROM json_to_recordset(%(granted)s::json)"
    " AS g(feature text, key text, ent text)),"
    " history AS (INSERT INTO access_changes (customer_id, feature_id, lookup_key, change, changed_at, event_id)"
    " SELECT %(customer)s, h.feature, h.key, h.change, %(now)s, %(event)s FROM json_to_recordset(%(history)s::json)"
    " AS h(feature text, key text, change text))"
)
_WRITE_DIFF = f"WITH {DIFF_CTES} SELECT 1"

_ROWS = select(Entitlement.feature_id, Entitlement.lookup_key, Entitlement.entitlement_id).where(
    Entitlement.customer_id == bindparam("customer")
)
_DELETE_ROW = delete(Entitlement).where(
    Entitlement.customer_id == bindparam("customer"), Entitlement.feature_id == bindparam("feature")
)
_MOVE_ROW = (
    update(Entitlement)
    .where(Entitlement.customer_id == bindparam("customer"), Entitlement.feature_id == bindparam("feature"))
    .values(lookup_key=bindparam("key"), entitlement_id=bindparam("ent"))
)


def a_customer_with_access(session: Session) -> str | None:
    """The most recently synced customer who holds a row (else any synced one): a customer Stripe must know."""
    synced = (
        select(CustomerSyncState.customer_id)
        .where(CustomerSyncState.synced_at.is_not(None))
        .order_by(CustomerSyncState.synced_at.desc())
        .limit(1)
    )
    holding = synced.where(exists().where(Entitlement.customer_id == CustomerSyncState.customer_id))
    return session.scalar(holding) or session.scalar(synced)


def entitlements_of(session: Session, customer_id: str) -> list[Entitlement]:
    statement = select(Entitlement).where(Entitlement.customer_id == customer_id)
    return list(session.scalars(statement.order_by(Entitlement.lookup_key, Entitlement.feature_id)))


def history_of(session: Session, customer_id: str, limit: int) -> list[AccessChange]:
    statement = select(AccessChange).where(AccessChange.customer_id == customer_id)
    newest_first = statement.order_by(AccessChange.changed_at.desc(), AccessChange.id.desc())
    return list(session.scalars(newest_first.limit(limit)))


# --- the read path ---------------------------------------------------------------------------------------
# It runs on a plain Connection with statements built once: services call it on their hot path, and skipping
# the ORM's unit of work and statement construction makes a lookup several times cheaper.

_SYNCED_AT = (
    select(CustomerSyncState.synced_at).where(CustomerSyncState.customer_id == bindparam("customer")).scalar_subquery()
)
_GRANTED_ROWS = (
    select(Entitlement.lookup_key, Entitlement.feature_id, Entitlement.entitlement_id, Entitlement.granted_at)
    .where(Entitlement.customer_id == bindparam("customer"))
    .order_by(Entitlement.lookup_key, Entitlement.feature_id)
)


def granted_rows(connection: Connection, customer_id: str) -> list[tuple[str, str, str, datetime]]:
    rows = connection.execute(_GRANTED_ROWS, {"customer": customer_id})
    return [(lookup_key, feature, entitlement, granted_at) for lookup_key, feature, entitlement, granted_at in rows]


def synced_at(connection: Connection | Session, customer_id: str) -> datetime | None:
    return connection.scalar(select(_SYNCED_AT), {"customer": customer_id})
