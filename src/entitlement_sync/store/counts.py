"""Event counts by status (`event_status_counts`, `event_status_deltas`), kept by triggers (migration 0003).

Reading them costs the same with ten million stored events as with ten: no query here touches stripe_events.
"""

from __future__ import annotations

from collections import Counter

from sqlalchemy import delete, func, literal_column, select, union_all
from sqlalchemy.orm import Session

from ..models import EventStatusCount, EventStatusDelta
from ._sql import upsert
from .locks import FOLD_COUNTS, try_transaction_lock


def event_counts(session: Session) -> dict[str, int]:
    """Events per status: the folded counts plus the deltas not yet folded, read in one statement (one
    snapshot), so a fold committing meanwhile is seen whole or not at all."""
    parts = union_all(
        select(EventStatusCount.status, EventStatusCount.count.label("n")),
        select(EventStatusDelta.status, EventStatusDelta.delta.label("n")),
    ).subquery()
    rows = session.execute(select(parts.c.status, func.sum(parts.c.n)).group_by(parts.c.status))
    return {status: int(total) for status, total in rows}


def fold_event_counts(session: Session) -> int:
    """Move the pending deltas into the counts; returns how many delta rows were folded (0 when another
    process holds the fold, which is fine: readers add the deltas themselves)."""
    if not try_transaction_lock(session, FOLD_COUNTS):  # one folder at a time; the others just read
        return 0
    # DELETE … RETURNING takes exactly the rows it removes: a delta committed meanwhile waits for the next fold.
    moved = session.execute(delete(EventStatusDelta).returning(EventStatusDelta.status, EventStatusDelta.delta))
    sums: Counter[str] = Counter()
    folded = 0
    for status, delta in moved:
        sums[status] += int(delta)
        folded += 1
    for status in sorted(sums):  # one lock order for every folder
        statement = upsert(session, EventStatusCount).values(status=status, count=sums[status])
        session.execute(
            statement.on_conflict_do_update(
                index_elements=["status"], set_={"count": EventStatusCount.count + literal_column("excluded.count")}
            )
        )
    return folded
