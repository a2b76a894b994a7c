"""What every store module needs from SQLAlchemy beyond plain statements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, CursorResult
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ..db import driver_rows_together
from ..models import Base


def upsert(session: Session, entity: type[Base]) -> Any:
    """An INSERT that can say ON CONFLICT, in the dialect of the session's database (PostgreSQL or SQLite)."""
    return upsert_for(dialect_of(session), entity)


def upsert_for(dialect: str, entity: type[Base]) -> Any:
    return (postgresql if dialect == "postgresql" else sqlite).insert(entity)


def dialect_of(session: Session) -> str:
    return session.get_bind().dialect.name


def flushed_connection(session: Session) -> Connection:
    """The session's connection, for plain SQL sent through the driver, after pending objects are flushed (as
    the session's own queries autoflush): such a statement must see what the transaction wrote so far."""
    if session.new or session.dirty or session.deleted:
        session.flush()
    return session.connection()


def rows_changed(session: Session, statement: Any) -> int:
    """How many rows an UPDATE or DELETE touched (reliable for those on every driver we use).

    Run on the session's connection, as plain SQL: the ORM's bulk-update bookkeeping (matching objects in the
    session) costs more than the statement on the worker's path, and no caller reads such objects afterwards.
    Pending objects are flushed first, as the session would.
    """
    if session.new or session.dirty or session.deleted:
        session.flush()
    return cast(CursorResult[Any], session.connection().execute(statement)).rowcount


def pg_rows(session: Session, sql: str, params: Any, *, last: bool = False) -> list[tuple[Any, ...]]:
    """PostgreSQL: the rows of one of the worker's written-out statements, through the driver
    (`db.driver_rows_together`), in the session's transaction and after its pending objects are flushed.

    `last`: the caller sends nothing more in this transaction and commits it next. The COMMIT then goes with the
    statement, in the same round trip, unless the session still has something to write at its commit (a hook's
    work: `PENDING_AT_COMMIT`) or is in a SAVEPOINT; the session's own commit then sends nothing. Nothing may
    follow it in the transaction but that commit: a statement raises `CommittedAlready`, and a failure can no
    longer roll it back.
    """
    return pg_rows_together(session, [(sql, params)], last=last)[0]


def pg_rows_together(
    session: Session, statements: list[tuple[str, Any]], *, last: bool = False
) -> list[list[tuple[Any, ...]]]:
    """`pg_rows` of several statements in one round trip (`db.driver_rows_together`)."""
    connection = _driver_connection(session)
    commit = last and not session.info.get(PENDING_AT_COMMIT) and not session.in_nested_transaction()
    if not commit:
        return driver_rows_together(connection, statements)
    rows = driver_rows_together(connection, statements, commit=True)
    session.info[_DRIVER_CONNECTION] = (session.get_transaction(), None)  # committed: nothing more goes through it
    return rows


# Work that a hook still writes when the session commits (the feed's numbering of the changes recorded): a
# statement sent as the transaction's last then leaves the COMMIT to the session.
PENDING_AT_COMMIT = "entitlement_sync.pending_at_commit"


class CommittedAlready(RuntimeError):
    """A statement after the one that committed the transaction (`pg_rows(last=True)`): a bug in its caller."""


def _driver_connection(session: Session) -> Connection:
    """The transaction's connection, looked up once per transaction, not per statement: `Session.connection()`
    cost as much as a statement's own execute on the worker's path."""
    if session.new or session.dirty or session.deleted:
        session.flush()
    transaction = session.get_transaction()
    kept = session.info.get(_DRIVER_CONNECTION)
    if kept is not None and kept[0] is transaction and kept[1] is None:
        raise CommittedAlready("a statement after the transaction was committed with its last one")
    if kept is None or kept[0] is not transaction or kept[1].invalidated:
        kept = (transaction, session.connection())
        session.info[_DRIVER_CONNECTION] = kept
    return cast(Connection, kept[1])


# (root transaction, its connection; None once a statement committed it with itself)
_DRIVER_CONNECTION = "entitlement_sync.store.driver_connection"


@dataclass
class WithParts:
    """PostgreSQL: one store's statement as parts of another's WITH statement, to save a statement and its round
    trip: its CTEs (named apart from the host's, as are their parameters), their parameters, and an expression
    the host's statement returns. The host sets `answer` to that value once the statement ran (`sent`)."""

    ctes: str
    values: dict[str, Any]
    result: str
    answer: Any = None
    sent: bool = False

    def join(self, parts: list[str], values: dict[str, Any]) -> str:
        """Add the CTEs to `parts` and the parameters to `values`; returns the result's expression."""
        assert not self.values.keys() & values.keys(), "parameters must be named apart"
        parts.append(self.ctes)
        values.update(self.values)
        return self.result

    def answered(self, value: Any) -> None:
        self.answer, self.sent = value, True
