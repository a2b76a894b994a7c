"""PostgreSQL's hot path of the inbox: a batch of webhooks (group_commit.py) stored in one statement, on the
receiver's writer connection. `inbox.store_event_if_new` is the same write, portable, one event at a time."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..events import InboundEvent
from ..fastjson import dumps_text
from ..models import EventStatus

_COLUMNS = (
    "id, type, customer_id, livemode, created, payload, status, customer_seq, attempts, last_error,"
    " received_at, status_changed_at, waits"
)


@dataclass(frozen=True)
class EventToStore:
    """One webhook's write: the event, the status it is stored in, why it is ignored (None: it is not), and
    whether its customer's sequence advances."""

    event: InboundEvent
    status: EventStatus
    note: str | None
    now: datetime
    sequenced: bool


def store_events_together(cursor: Any, writes: Sequence[EventToStore]) -> list[bool]:
    """`store_event_if_new` for each write, as one PostgreSQL statement on the driver's cursor (in autocommit: one
    transaction, one round trip, one firing of the count triggers for the whole batch); True for each write
    that stored its event, False for a duplicate (of a stored event, or of an earlier write in the batch)."""
    first: dict[str, int] = {}
    for index, write in enumerate(writes):
        first.setdefault(write.event.id, index)
    cursor.execute(_STORE_BATCH, {"batch": "[" + ",".join(_batch_row(writes[index]) for index in first.values()) + "]"})
    stored = {row[0] for row in cursor.fetchall()}
    return [first[write.event.id] == index and write.event.id in stored for index, write in enumerate(writes)]


def _batch_row(write: EventToStore) -> str:
    """One write as a JSON object. The verified body goes in as a string, cast to json only where it is stored:
    the server then checks it as it did alone (a lone surrogate escape is valid json text, which a document
    that held it as an object could not be taken apart with), and the driver quotes no array."""
    event = write.event
    return dumps_text(
        {
            "id": event.id,
            "type": event.type,
            "customer_id": event.customer_id,
            "livemode": event.livemode,
            "created": event.created,
            "status": str(write.status),
            "note": write.note,
            "now": write.now.isoformat(),
            "sequenced": write.sequenced and event.customer_id is not None,
            # As Stripe sent it: the payload is not serialized again.
            "payload": event.body if event.body is not None else json.dumps(event.payload),
        }
    )


# PostgreSQL's hot path, written out: a batch of webhooks (group_commit.py) in one statement, sent as it stands
# (no compiling, no bind processing; the driver prepares it) on an autocommit connection, where it is its own
# transaction. Each event not stored yet advances its customer's sequence, several of one customer by one each
# in id order; an id already stored takes no lock on its customer's row. (Two copies arriving at once may both
# advance it; a gap in the sequence orders nothing differently.) Customers' rows are locked in id order, so two
# batches never wait for each other in a cycle over them. Ids are unique within a batch (store_events_together).
# "Not stored yet" is a subquery per row, not NOT EXISTS: the server takes json_to_recordset for 100 rows, and the
# plan it caches for the prepared statement (planned while the inbox was small) then answered NOT EXISTS with a
# hash anti-join over a scan of the whole inbox, a batch's cost growing with every event stored (2 ms to 12 ms
# over a 12,000-event bench run); the subquery is always one primary-key probe per row.
_STORE_BATCH = (
    "WITH batch AS (SELECT * FROM json_to_recordset(%(batch)s::json) AS b(id text, type text, customer_id text,"
    " livemode boolean, created bigint, status text, note text, now timestamptz, sequenced boolean, payload text)),"
    " numbered AS ("
    " SELECT id, customer_id, row_number() OVER mine AS nth, count(*) OVER mine AS of_customer FROM batch b"
    " WHERE sequenced AND (SELECT true FROM stripe_events e WHERE e.id = b.id) IS NULL"
    " WINDOW mine AS (PARTITION BY customer_id ORDER BY id"
    " ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)),"
    " advanced AS ("
    " INSERT INTO customer_sync_state (customer_id, seq, applied_seq)"
    " SELECT customer_id, count(*), 0 FROM numbered GROUP BY customer_id ORDER BY customer_id"
    " ON CONFLICT (customer_id) DO UPDATE SET seq = customer_sync_state.seq + excluded.seq"
    " RETURNING customer_id, seq)"
    f" INSERT INTO stripe_events ({_COLUMNS})"
    " SELECT b.id, b.type, b.customer_id, b.livemode, b.created, b.payload::json, b.status,"
    " a.seq - n.of_customer + n.nth, 0, b.note, b.now, b.now, 0"
    " FROM batch b LEFT JOIN numbered n ON n.id = b.id LEFT JOIN advanced a ON a.customer_id = n.customer_id"
    " ORDER BY b.id"
    " ON CONFLICT (id) DO NOTHING RETURNING id"
)
