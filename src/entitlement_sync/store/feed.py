"""The access feed (`access_feed`): every flip of effective access, numbered in commit order.

Why not the ids of `effective_access_changes`: a sequence hands out ids when rows are inserted, and on
PostgreSQL two transactions can commit in the other order. A reader that saw id 8 committed and moved its
cursor past 7 would never see 7 once it commits. Here a transaction numbers its flips only at its very end,
with `UPDATE access_feed_state SET last_cursor = last_cursor + n`: the row lock that UPDATE takes is held
until COMMIT, so the next writer gets its numbers only after this one has committed (PostgreSQL releases a
transaction's locks after it is visible to new snapshots). Cursors therefore become visible in order, and a
reader may move past every cursor it has seen. Only the commit tails of transactions that flip access
queue on that row; their work before it runs in parallel. Per customer, order is already given by the
customer lock that `AccessPolicy.recompute` takes.

Where: `track` is called by `store.effective.add_changes`, the one place a change is recorded, and the
numbering runs in a `before_commit` hook on every Session. A hook rather than a call in each use case: the
sync, the subscription mirror, overrides, the catalog sync, the policy review and `access recompute` all
record changes, and a path added later cannot forget to publish what it records.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, event, func, insert, literal, select, update
from sqlalchemy.orm import Session, SessionTransaction

from .. import policy
from ..models import AccessFeedEntry, AccessFeedState, EffectiveAccess, EffectiveAccessChange
from ._sql import PENDING_AT_COMMIT, WithParts, pg_rows, rows_changed, upsert

CHANNEL = "access_feed"  # LISTEN/NOTIFY channel on PostgreSQL; the payload is the last cursor committed
PUBLISHED = ("granted", "revoked")  # `updated` (same access, new reason) is history, not news for a copy
_PENDING = PENDING_AT_COMMIT  # the changes this transaction recorded, to number at its commit
_STATE_ID = 1


def track(session: Session, change: EffectiveAccessChange) -> None:
    """Publish this change when the session's transaction commits (flips only)."""
    if change.change in PUBLISHED:
        session.info.setdefault(_PENDING, []).append(change)


@event.listens_for(Session, "before_commit")
def _number_at_commit(session: Session) -> None:
    if session.in_nested_transaction():  # a SAVEPOINT: the outer transaction publishes
        return
    pending = session.info.pop(_PENDING, None)
    if pending:
        publish(session, pending)


@event.listens_for(Session, "after_transaction_end")
def _forget_on_rollback(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop(_PENDING, None)


def publish(session: Session, changes: Sequence[EffectiveAccessChange]) -> int:
    """Number the changes after every cursor committed so far; returns the last. Hold the lock to commit."""
    # An upsert: the row exists from the migration on, but a test (or a restore) that empties the tables
    # must not stop the feed. Either way the statement locks the row until COMMIT.
    if session.get_bind().dialect.name == "postgresql":
        return _publish_in_one_statement(session, changes)
    session.flush()
    kept = _still_recorded(session, changes)
    if not kept:
        return 0
    statement = (
        upsert(session, AccessFeedState)
        .values(id=_STATE_ID, last_cursor=len(kept), pruned_through=0)
        .on_conflict_do_update(index_elements=["id"], set_={"last_cursor": AccessFeedState.last_cursor + len(kept)})
        .returning(AccessFeedState.last_cursor)
    )
    last = int(session.execute(statement).scalar_one())
    first = last - len(kept) + 1
    session.execute(insert(AccessFeedEntry), [_entry(first + n, change) for n, change in enumerate(kept)])
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_notify(CHANNEL, str(last))))  # delivered at COMMIT, dropped on rollback
    return last


def _still_recorded(session: Session, changes: Sequence[EffectiveAccessChange]) -> list[EffectiveAccessChange]:
    """The changes whose history row this transaction still holds: a rolled-back SAVEPOINT removed the others."""
    ids = [change.id for change in changes]
    found = set(session.scalars(select(EffectiveAccessChange.id).where(EffectiveAccessChange.id.in_(ids))))
    return [change for change in changes if change.id in found]


def _numbering(prefix: str, *, customer: str) -> str:
    """The CTEs that number the rows of `{prefix}kept` (its `n`: 1, 2, ... in order) into the feed, after its
    last cursor, and write their entries; their names and the state's id parameter are `prefix`ed.
    `customer`: the SQL of each entry's customer."""
    kept, total, numbered = f"{prefix}kept", f"{prefix}total", f"{prefix}numbered"
    return (
        f"{total} AS (SELECT count(*) AS n FROM {kept}),"
        f" {numbered} AS (INSERT INTO access_feed_state (id, last_cursor, pruned_through)"
        f" SELECT %({prefix}id)s, {total}.n, 0 FROM {total} WHERE {total}.n > 0"
        " ON CONFLICT (id) DO UPDATE SET last_cursor = access_feed_state.last_cursor + EXCLUDED.last_cursor"
        " RETURNING last_cursor),"
        f" {prefix}entries AS (INSERT INTO access_feed (cursor, change_id, customer_id, lookup_key, change, features,"
        f" cause, changed_at) SELECT {numbered}.last_cursor - {total}.n + {kept}.n, {kept}.change_id, {customer},"
        f" {kept}.lookup_key, {kept}.change, {kept}.features, {kept}.cause, {kept}.changed_at"
        f" FROM {numbered}, {total}, {kept})"
    )


# PostgreSQL: numbering, entries and the notification in one statement (one round trip at the commit's tail).
# Only changes whose history row is still there are numbered (a rolled-back SAVEPOINT removed the others); no
# row is locked and nothing is notified when none is. "Still there" is a subquery per entry, not EXISTS: the
# server takes json_to_recordset for 100 rows, and the generic plan it caches for the prepared statement answered
# EXISTS with a hash join over a scan of the whole history, which only grows (test_feed_publish_plan.py).
_PUBLISH = (
    "WITH kept AS (SELECT e.*, row_number() OVER (ORDER BY e.place) AS n FROM json_to_recordset(%(entries)s::json)"
    " AS e(place bigint, change_id integer, customer_id text, lookup_key text, change text, features json,"
    " cause text, changed_at timestamptz)"
    " WHERE (SELECT true FROM effective_access_changes c WHERE c.id = e.change_id)), "
    + _numbering("", customer="kept.customer_id")
    + " SELECT last_cursor, pg_notify(%(channel)s, last_cursor::text) FROM numbered"
)


def _publish_in_one_statement(session: Session, changes: Sequence[EffectiveAccessChange]) -> int:
    entries = [
        {**_entry(place, change), "place": place, "changed_at": change.changed_at.isoformat()}
        for place, change in enumerate(changes, start=1)
    ]
    values = {"id": _STATE_ID, "entries": json.dumps(entries), "channel": CHANNEL}
    rows = pg_rows(session, _PUBLISH, values)
    return int(rows[0][0]) if rows else 0


def publish_parts(session: Session, customer_id: str, changes: Sequence[dict[str, Any]]) -> WithParts | None:
    """PostgreSQL: the feed's numbering of these history rows, as parts of the statement that records them with
    `effective.SAVE_CTES` (its `recorded` part gives their ids), for a writer whose statement is the last before
    COMMIT: the feed's row lock is then held no longer than with the hook. None when there is nothing to publish,
    on SQLite, or when changes recorded earlier in this transaction are pending (they must be numbered first):
    the hook at commit numbers them then. The caller passes `published=True` to `effective.recorded`."""
    flips = [change for change in changes if change["change"] in PUBLISHED]
    if not flips or session.info.get(_PENDING) or session.get_bind().dialect.name != "postgresql":
        return None
    entries = [
        {
            "place": place,
            "lookup_key": change["lookup_key"],
            "change": change["change"],
            "features": policy.features_of(change["sources"]),
            "cause": change["cause"],
            "changed_at": change["changed_at"].isoformat(),
        }
        for place, change in enumerate(flips, start=1)
    ]
    values = {"feed_entries": json.dumps(entries), "feed_id": _STATE_ID, "feed_channel": CHANNEL}
    return WithParts(
        _PUBLISH_CTES, values, "(SELECT pg_notify(%(feed_channel)s, last_cursor::text) FROM feed_numbered)"
    )


# `_PUBLISH` over the rows the same statement records (`recorded`, by key: a recompute records one change a key).
_PUBLISH_CTES = (
    "feed_kept AS (SELECT r.id AS change_id, e.*, row_number() OVER (ORDER BY e.place) AS n"
    " FROM json_to_recordset(%(feed_entries)s::json) AS e(place bigint, lookup_key text, change text, features json,"
    " cause text, changed_at timestamptz) JOIN recorded r ON r.lookup_key = e.lookup_key), "
    + _numbering("feed_", customer="%(customer)s")
)


def _entry(cursor: int, change: EffectiveAccessChange) -> dict[str, Any]:
    return {
        "cursor": cursor,
        "change_id": change.id,
        "customer_id": change.customer_id,
        "lookup_key": change.lookup_key,
        "change": change.change,
        "features": policy.features_of(change.sources),
        "cause": change.cause,
        "changed_at": change.changed_at,
    }


def bounds(session: Session) -> tuple[int, int]:
    """(the last cursor committed, the last one pruned)."""
    row = session.execute(
        select(AccessFeedState.last_cursor, AccessFeedState.pruned_through).where(AccessFeedState.id == _STATE_ID)
    ).first()
    return (int(row.last_cursor), int(row.pruned_through)) if row is not None else (0, 0)


def entries_after(session: Session, after: int, limit: int) -> list[AccessFeedEntry]:
    statement = select(AccessFeedEntry).where(AccessFeedEntry.cursor > after)
    return list(session.scalars(statement.order_by(AccessFeedEntry.cursor).limit(limit)))


def prune_through(session: Session, cursor: int) -> int:
    """Delete the entries up to `cursor` and remember it (consumers behind it must re-snapshot)."""
    deleted = rows_changed(session, delete(AccessFeedEntry).where(AccessFeedEntry.cursor <= cursor))
    session.execute(
        update(AccessFeedState)
        .where(AccessFeedState.id == _STATE_ID, AccessFeedState.pruned_through < cursor)
        .values(pruned_through=cursor)
        .execution_options(synchronize_session=False)
    )
    return deleted


def last_cursor_before(session: Session, moment: datetime) -> int | None:
    return session.scalar(select(func.max(AccessFeedEntry.cursor)).where(AccessFeedEntry.changed_at < moment))


# --- the snapshot: the cursor and a page of rows read by ONE statement, hence from one MVCC snapshot -------

_PAGE_CUSTOMERS = (
    select(EffectiveAccess.customer_id)
    .where(EffectiveAccess.customer_id > bindparam("after_customer"))
    .distinct()
    .order_by(EffectiveAccess.customer_id)
    .limit(bindparam("limit"))
)
_LAST_CURSOR = select(
    func.coalesce(select(AccessFeedState.last_cursor).where(AccessFeedState.id == _STATE_ID).scalar_subquery(), 0)
)
_ONE_ROW = select(literal(1).label("one")).subquery()
# Always one row at least (an empty page still says which cursor it is consistent with).
_SNAPSHOT = (
    select(
        _LAST_CURSOR.scalar_subquery().label("last_cursor"),
        EffectiveAccess.customer_id,
        EffectiveAccess.lookup_key,
        EffectiveAccess.granted,
        EffectiveAccess.sources,
    )
    .select_from(_ONE_ROW)
    .outerjoin(EffectiveAccess, EffectiveAccess.customer_id.in_(_PAGE_CUSTOMERS))
    .order_by(EffectiveAccess.customer_id, EffectiveAccess.lookup_key)
)


def snapshot_page(connection: Connection, after_customer: str, limit: int) -> tuple[int, list[Any]]:
    """(the cursor this page is consistent with, the rows of the next `limit` customers after one)."""
    rows = connection.execute(_SNAPSHOT, {"after_customer": after_customer, "limit": limit}).all()
    cursor = int(rows[0].last_cursor)
    return cursor, [row for row in rows if row.customer_id is not None]
