"""A write of a customer's rows as the writer makes it: the sync state it records, the events a fetch covers,
and the rows with their history, in one statement on PostgreSQL (the portable statements elsewhere)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from ..models import EffectiveAccessChange, EventStatus
from ..ordering import Held
from ..ports import ActiveEntitlement
from . import access, effective, feed, inbox, locks, policy_inputs, sync_state
from ._sql import WithParts, dialect_of, pg_rows


def read_before_write(
    session: Session, customer_id: str
) -> tuple[Held, list[access.HeldRow] | None, policy_inputs.PolicyRead | None]:
    """Take the customer's lock, then read what their rows hold (`sync_state.held_state`) and, on PostgreSQL, the rows
    and the policy's other inputs too: one statement, sent with the lock in one round trip. The recompute after
    the write needs no read of its own then (None elsewhere: the writer and the recompute read for themselves).

    Read before the write and used after it: the lock keeps every other writer of these inputs out meanwhile
    (each takes it before its recompute reads), so the write is the only change in between (docs/design.md, Cost).
    """
    if dialect_of(session) != "postgresql":
        locks.lock_customer(session, customer_id)
        return sync_state.held_state(session, customer_id), None, None
    (row,) = locks.lock_customer(session, customer_id, then=(_HELD_ROWS_AND_INPUTS, {"customer": customer_id}))
    held, rows, others = row[:5], row[5], row[6:]
    return sync_state.held_from(*held), access.rows_from_json(rows), policy_inputs.policy_read_from(*others)


_HELD_ROWS_AND_INPUTS = (
    "SELECT held.synced_at, held.applied_seq, held.state_seq, held.as_of_from, held.as_of_until,"
    f" {access.ROWS_JSON} WHERE customer_id = %(customer)s),{policy_inputs.OTHER_INPUTS_JSON}"
    " FROM (SELECT 1) AS one LEFT JOIN customer_sync_state held ON held.customer_id = %(customer)s"
)


def record_and_replace(
    session: Session,
    customer_id: str,
    after: Held,
    now: datetime,
    fetched: Sequence[ActiveEntitlement],
    event_id: str | None,
    rows: Sequence[access.HeldRow] | None,
    *,
    supersede: bool,
    effective_saved: EffectiveSaved | None = None,
    also: WithParts | None = None,
    last: bool = False,
    commit: bool = False,
) -> tuple[int, access.AccessDiff, list[EffectiveAccessChange]]:
    """`sync_state.record_write`, then (`supersede`: a fetch's ticket moved `applied_seq` on) `inbox.supersede_synced`
    for the customer, then `access.replace_entitlements`, then (`effective_saved`: a recompute's writes, planned
    from what these writes leave) `effective.save`. Returns the new `state_seq`, the diff and the changes
    recorded. `also` (PostgreSQL): another store's parts, sent in the same statement and answered. `last`: the
    caller's transaction commits after this statement, with no other statement: the changes recorded are then
    numbered into the feed by it too (`feed.publish_parts`), not by the hook at commit. `commit` (with `last`):
    the caller writes nothing more either (no deliveries of the changes): the COMMIT goes with the statement."""
    if dialect_of(session) != "postgresql":
        state_seq = sync_state.record_write(session, customer_id, after, now)
        if supersede:
            inbox.supersede_synced(session, now, customer_id)
        diff = access.replace_entitlements(session, customer_id, fetched, event_id, now, rows)
        saved = effective.save(session, customer_id, *effective_saved) if effective_saved is not None else []
        return state_seq, diff, saved
    diff = access.diff_and_move(session, customer_id, fetched, rows)
    values: dict[str, Any] = {
        "customer": customer_id,
        "applied": after.applied_seq,
        "from_": after.window.start,
        "until": after.window.end,
        "now": now,
        "superseded": str(EventStatus.SUPERSEDED),
        "covered": [str(EventStatus.FAILED), str(EventStatus.WAITING)],
    }
    parts = [_RECORD]
    if supersede:
        parts.append(_SUPERSEDE)
    if diff.changed:
        parts.append(access.DIFF_CTES)
        values.update(access.diff_values(customer_id, diff, event_id, now))
    recorded, published = "NULL", None
    if effective_saved is not None and any(effective_saved):
        parts.append(effective.SAVE_CTES)
        values.update(effective.save_values(customer_id, *effective_saved))  # shares only `customer`
        recorded = "(SELECT json_agg(json_build_array(lookup_key, id)) FROM recorded)"
        published = feed.publish_parts(session, customer_id, effective_saved[2]) if last else None
    answer = also.join(parts, values) if also is not None else "NULL"
    notified = published.join(parts, values) if published is not None else "NULL"
    statement = f"WITH {', '.join(parts)} SELECT state_seq, {recorded}, {answer}, {notified} FROM written"
    ((state_seq, ids, answered, _),) = pg_rows(session, statement, values, last=last and commit)
    if also is not None:
        also.answered(answered)
    if effective_saved is None:
        return int(state_seq), diff, []
    return int(state_seq), diff, effective.recorded(session, ids, effective_saved[2], published=published is not None)


# `store.effective.save`'s arguments after the customer's id: rows to upsert, keys to delete, history rows.
EffectiveSaved = tuple[list[dict[str, Any]], list[str], list[dict[str, Any]]]


# The write takes its own place in the customer's sequence (see sync_state.record_write).
_RECORD = (
    "written AS ("
    " INSERT INTO customer_sync_state (customer_id, seq, state_seq, applied_seq, as_of_from, as_of_until, synced_at)"
    " VALUES (%(customer)s, 1, 1, %(applied)s, %(from_)s, %(until)s, %(now)s)"
    " ON CONFLICT (customer_id) DO UPDATE SET seq = customer_sync_state.seq + 1,"
    " state_seq = customer_sync_state.seq + 1, applied_seq = EXCLUDED.applied_seq, as_of_from = EXCLUDED.as_of_from,"
    " as_of_until = EXCLUDED.as_of_until, synced_at = EXCLUDED.synced_at"
    " RETURNING state_seq)"
)
# inbox.supersede_synced for one customer, against the `applied_seq` this statement writes.
_SUPERSEDE = (
    "superseded AS (UPDATE stripe_events SET status = %(superseded)s, status_changed_at = %(now)s, retry_at = NULL"
    " WHERE customer_id = %(customer)s AND status = ANY(%(covered)s) AND customer_seq < %(applied)s)"
)
