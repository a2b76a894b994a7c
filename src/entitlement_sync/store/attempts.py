"""The worker's side of the inbox: claiming an event for an attempt that then owns it, and finishing that
attempt. On PostgreSQL each is one statement, sent on the driver (`_sql.pg_rows`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, update
from sqlalchemy.orm import Session

from ..events import SUBSCRIPTION_TYPES, SUMMARY_UPDATED
from ..models import CLAIMABLE, EventAttempt, EventStatus, StripeEvent
from ..ordering import NOTHING_HELD, Held
from . import locks
from ._sql import WithParts, dialect_of, pg_rows, rows_changed
from .access import ROWS_JSON, HeldRow, rows_from_json
from .policy_inputs import OTHER_INPUTS_JSON, PolicyRead, policy_read_from
from .sync_state import advancing, held_from, held_state


def claim_for_processing(session: Session, event_id: str, now: datetime) -> tuple[StripeEvent, int] | None:
    """Mark the event processing and open an attempt that owns it; None when it is finished or unknown.

    A later claim (the sweep's, after a worker died) takes ownership over an earlier one: the earlier attempt
    may still run to its end, but its finish no longer changes the event.
    """
    if dialect_of(session) == "postgresql":  # the claim alone: what records a bug must not run the worker's reads
        found = pg_rows(session, _CLAIM_ONLY, _claim_values(event_id, now))
        if not found:
            return None
        claimed = _event_of(found[0])
        return claimed, int(claimed.claimed_by or 0)
    claim = (
        update(StripeEvent)
        .where(StripeEvent.id == event_id, StripeEvent.status.in_(CLAIMABLE))
        .values(status=EventStatus.PROCESSING, attempts=StripeEvent.attempts + 1, status_changed_at=now)
        .returning(StripeEvent)  # the claimed row itself: no second read
        .execution_options(synchronize_session=False)
    )
    event = session.scalars(claim).first()
    if event is None:
        return None
    opened = insert(EventAttempt).values(event_id=event_id, started_at=now).returning(EventAttempt.id)
    attempt_id = int(session.execute(opened).scalar_one())
    rows_changed(session, update(StripeEvent).where(StripeEvent.id == event_id).values(claimed_by=attempt_id))
    return event, attempt_id


@dataclass(frozen=True)
class Claimed:
    event: StripeEvent
    attempt_id: int
    held: Held  # what the customer's rows hold (`sync_state.held_state`)
    rows: list[HeldRow] | None  # the customer's rows, when read with the claim (PostgreSQL); else None
    # The policy's other inputs, read with the claim of a summary event that may carry the whole set (PostgreSQL,
    # the customer's lock taken first): a write of its payload then plans its recompute without a read.
    policy_read: PolicyRead | None = None
    # The fetch's ticket, taken with the claim of an event that will need a fetch unless covered (PostgreSQL, the
    # customer's lock taken first); None: take one when a fetch is needed (`sync_state.advance_customer_seq`).
    ticket: int | None = None


def claim_with_held(session: Session, event_id: str, now: datetime, lock_first: str | None = None) -> Claimed | None:
    """`claim_for_processing`, and what the event's customer's rows hold. Call it with the customer's lock held
    (or name the customer in `lock_first`: it is taken first): only holders of that lock change what it reads. One
    statement on PostgreSQL, sent with the lock in one round trip."""
    if dialect_of(session) == "postgresql":
        return _claim_in_one_statement(session, event_id, now, lock_first)
    if lock_first is not None:
        locks.lock_customer(session, lock_first)
    claimed = claim_for_processing(session, event_id, now)
    if claimed is None:
        return None
    event, attempt_id = claimed
    held = held_state(session, event.customer_id) if event.customer_id else NOTHING_HELD
    return Claimed(event, attempt_id, held, None)


# PostgreSQL's worker path, written out: the claim and its attempt in one statement. The attempt's id is drawn
# from its sequence first, so the event can name its owner in the same UPDATE that claims it (the foreign key
# of the attempt's row is checked at the statement's end, when both rows exist).
_EVENT_COLUMNS = tuple(column.name for column in cast(Table, StripeEvent.__table__).columns)
_CLAIMED_AND_OPENED = (
    "WITH claimed AS ("
    " UPDATE stripe_events SET status = %(processing)s, attempts = attempts + 1, status_changed_at = %(now)s,"
    " claimed_by = nextval(pg_get_serial_sequence('event_attempts', 'id'))"
    " WHERE id = %(event)s AND status = ANY(%(claimable)s)"
    f" RETURNING {', '.join(_EVENT_COLUMNS)}),"
    " opened AS (INSERT INTO event_attempts (id, event_id, started_at) SELECT claimed_by, id, %(now)s FROM claimed)"
)
_CLAIM_ONLY = _CLAIMED_AND_OPENED + f" SELECT {', '.join('claimed.' + name for name in _EVENT_COLUMNS)} FROM claimed"
# The fetch's ticket (`sync_state.advance_customer_seq`), taken in the claim for an event that will need a fetch
# unless a newer state is held already (a subscription event, a summary that does not look complete): a statement
# fewer, and the COMMIT after it goes alone, as psycopg's own (cheaper than a statement of ours). Taken under the
# customer's lock, after what `held` reads (its snapshot is the statement's: it does not see the bump). A ticket
# that goes unused (the event turns out covered) only leaves a gap in the sequence.
_MAY_BE_COMPLETE = "claimed.payload::text ~ '\"has_more\"\\s*:\\s*false'"
_TICKET_FOR = (
    "SELECT customer_id, 1, 0, 0 FROM claimed WHERE customer_id IS NOT NULL AND (type = ANY(%(subscription_types)s)"
    f" OR (type = %(summary)s AND NOT {_MAY_BE_COMPLETE}))"
)
_TICKET = ", ticket AS (" + advancing(_TICKET_FOR) + ")"
_CLAIM = (
    _CLAIMED_AND_OPENED
    + _TICKET
    + " SELECT (SELECT seq FROM ticket),"
    + f" {', '.join('claimed.' + name for name in _EVENT_COLUMNS)},"
    " held.synced_at, held.applied_seq, held.state_seq, held.as_of_from, held.as_of_until,"
    f" {ROWS_JSON} WHERE entitlements.customer_id = claimed.customer_id),"
    # A hint, matched in the stored text: never parsing it, the claim cannot fail on a body the server stored but will
    # not read inside (half a surrogate pair). Python decides from the parsed payload; a wrong hint costs a read.
    f" CASE WHEN claimed.type = %(summary)s AND {_MAY_BE_COMPLETE}"
    f" THEN json_build_array({OTHER_INPUTS_JSON.replace('%(customer)s', 'claimed.customer_id')}) END"
    " FROM claimed LEFT JOIN customer_sync_state held ON held.customer_id = claimed.customer_id"
)
_CLAIMABLE = [str(status) for status in CLAIMABLE]
_SUBSCRIPTION_TYPES = sorted(SUBSCRIPTION_TYPES)


def _claim_values(event_id: str, now: datetime) -> dict[str, Any]:
    return {
        "event": event_id,
        "now": now,
        "processing": str(EventStatus.PROCESSING),
        "claimable": _CLAIMABLE,
        "summary": SUMMARY_UPDATED,
        "subscription_types": _SUBSCRIPTION_TYPES,
    }


def _claim_in_one_statement(
    session: Session, event_id: str, now: datetime, lock_first: str | None = None
) -> Claimed | None:
    values = _claim_values(event_id, now)
    if lock_first is not None:
        found = locks.lock_customer(session, lock_first, then=(_CLAIM, values))
    else:
        found = pg_rows(session, _CLAIM, values)
    if not found:
        return None
    ticket, *row = found[0]
    event = _event_of(tuple(row))
    held = held_from(*row[len(_EVENT_COLUMNS) : -2])
    # Read before the lock, the policy's inputs could be older than a writer's who holds it: left unread then.
    inputs = policy_read_from(*row[-1]) if row[-1] is not None and lock_first is not None else None
    # Without the lock first, the ticket might not come after a write the lock's holder is making: not used then.
    taken = int(ticket) if ticket is not None and lock_first is not None else None
    return Claimed(event, int(event.claimed_by or 0), held, rows_from_json(row[-2]), inputs, taken)


def _event_of(row: tuple[Any, ...]) -> StripeEvent:
    """A detached copy of the claimed row, from its `_EVENT_COLUMNS` (the first columns of `row`): the worker reads
    it and never writes it back through the session."""
    fields = dict(zip(_EVENT_COLUMNS, row[: len(_EVENT_COLUMNS)], strict=True))
    for name, value in fields.items():  # the driver's datetimes come in the connection's zone; ours are UTC
        if isinstance(value, datetime):
            fields[name] = value.astimezone(UTC)
    return StripeEvent(**fields)


@dataclass(frozen=True)
class Unavailability:
    """Stripe could not be reached for this event: since when, how many sweep pauses so far, the next try."""

    since: datetime
    waits: int = 0
    retry_at: datetime | None = None  # None: the queue retries it, not the sweep


def finish_attempt(
    session: Session,
    event_id: str,
    attempt_id: int,
    status: EventStatus,
    error: str | None,
    now: datetime,
    *,
    unavailable: Unavailability | None = None,
    last: bool = False,
) -> bool:
    """Close the attempt, and set the event's outcome if this attempt still owns it; False when it did not.
    `last`: the transaction's last statement, which may take its COMMIT along (`_sql.pg_rows`)."""
    values = _finish_values(status, error, now, unavailable)
    if dialect_of(session) == "postgresql":  # the event's outcome and the attempt's close in one statement
        params = _finish_params(event_id, attempt_id, values, error, now)
        rows = pg_rows(session, _finish_statement(tuple(values)), params, last=last)
        return bool(rows and rows[0][0])
    owned = rows_changed(
        session,
        update(StripeEvent).where(StripeEvent.id == event_id, StripeEvent.claimed_by == attempt_id).values(**values),
    )
    outcome, note = (status.value, error) if owned else ("overtaken", _overtaken(status, error))
    closed = {"attempt": attempt_id, "now": now, "outcome": outcome, "note": note}
    session.connection().execute(_CLOSE_ATTEMPT, closed)
    return owned == 1


def finish_parts(
    session: Session, event_id: str, attempt_id: int, status: EventStatus, error: str | None, now: datetime
) -> WithParts | None:
    """PostgreSQL: `finish_attempt` as parts of the caller's next write (`WithParts`), whose answer says whether
    the attempt still owned the event; None elsewhere (call `finish_attempt`)."""
    if dialect_of(session) != "postgresql":
        return None
    values = _finish_values(status, error, now, None)
    prefixed = {
        f"finish_{name}": value for name, value in _finish_params(event_id, attempt_id, values, error, now).items()
    }
    return WithParts(_finish_ctes(tuple(values), "finish_"), prefixed, "EXISTS (SELECT FROM finished)")


def _finish_values(
    status: EventStatus, error: str | None, now: datetime, unavailable: Unavailability | None
) -> dict[str, Any]:
    """The event's columns an attempt's finish sets."""
    values: dict[str, Any] = {"status": status, "status_changed_at": now, "claimed_by": None}
    if status == EventStatus.PROCESSED:
        values["processed_at"] = now
    if error is not None or status == EventStatus.PROCESSED:
        values["last_error"] = error
    if unavailable is not None:
        values.update(unavailable_since=unavailable.since, waits=unavailable.waits)
    values["retry_at"] = unavailable.retry_at if unavailable and status == EventStatus.WAITING else None
    if status in (EventStatus.PROCESSED, EventStatus.SUPERSEDED, EventStatus.IGNORED):
        values.update(unavailable_since=None, waits=0)
    return values


def _overtaken(status: EventStatus, error: str | None) -> str:
    return f"ended {status}; a later attempt owns the event" + (f": {error}" if error else "")


def _finish_params(
    event_id: str, attempt_id: int, values: dict[str, Any], error: str | None, now: datetime
) -> dict[str, Any]:
    """The parameters of `_finish_ctes`: the event's new columns (`values`, from `_finish_values`) and the
    attempt's close, whichever way it ends."""
    status = values["status"]
    params = {f"set_{name}": str(value) if isinstance(value, EventStatus) else value for name, value in values.items()}
    params.update(event=event_id, attempt=attempt_id, now=now, outcome=status.value, error=error)
    params["overtaken"] = _overtaken(status, error)
    return params


@cache
def _finish_statement(columns: tuple[str, ...]) -> str:
    return f"WITH {_finish_ctes(columns, '')} SELECT EXISTS (SELECT FROM finished)"


@cache
def _finish_ctes(columns: tuple[str, ...], prefix: str) -> str:
    """The event's outcome (`finished`: the attempt still owned it) and the attempt's close; parameters `prefix`ed."""
    assignments = ", ".join(f"{name} = %({prefix}set_{name})s" for name in columns)
    ctes = (
        f"finished AS (UPDATE stripe_events SET {assignments}"
        " WHERE id = %(event)s AND claimed_by = %(attempt)s RETURNING 1),"
        " closed AS (UPDATE event_attempts SET finished_at = %(now)s,"
        " outcome = CASE WHEN EXISTS (SELECT FROM finished) THEN %(outcome)s ELSE 'overtaken' END,"
        " error = CASE WHEN EXISTS (SELECT FROM finished) THEN %(error)s ELSE %(overtaken)s END"
        " WHERE id = %(attempt)s)"
    )
    for name in ("event", "attempt", "now", "outcome", "error", "overtaken"):
        ctes = ctes.replace(f"%({name})s", f"%({prefix}{name})s")
    return ctes


_CLOSE_ATTEMPT = (
    update(EventAttempt)
    .where(EventAttempt.id == bindparam("attempt"))
    .values(
        finished_at=bindparam("now", type_=EventAttempt.__table__.c.finished_at.type),
        outcome=bindparam("outcome"),
        error=bindparam("note"),
    )
)
