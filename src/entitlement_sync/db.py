"""Engines, transactions and migrations: the one home of SQLAlchemy's plumbing and Alembic."""

from __future__ import annotations

import re
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, TypeVar

from psycopg.raw_cursor import RawCursorMixin
from sqlalchemy import Connection, Engine, create_engine, event, exc
from sqlalchemy.orm import Session, sessionmaker

from .errors import StorageUnavailable
from .statement_deadline import StatementDeadline

MIGRATIONS = Path(__file__).parent / "migrations"
T = TypeVar("T")

# Errors that mean "the database is not there right now", as opposed to a bug in our SQL.
_UNAVAILABLE = (exc.OperationalError, exc.InterfaceError, exc.TimeoutError)


@dataclass(frozen=True)
class PoolOptions:
    threads: int = 1  # threads of this process that use the database at once: one connection each
    statement_timeout_seconds: float = 3.0
    connect_timeout_seconds: int = 3
    # A few more for the odd extra user (a readiness probe, the sweep's lock), never a second pool's worth.
    # -1: no bound (the readers' pool, where each reading thread keeps one).
    overflow: int = 2


# What each engine was built with, for the readers' pool built beside it (see ThreadConnections).
_BUILT: weakref.WeakKeyDictionary[Engine, tuple[PoolOptions, StatementDeadline]] = weakref.WeakKeyDictionary()


# The server cancels a statement at statement_timeout; the client gives a frozen server this much longer.
CLIENT_GRACE_SECONDS = 0.5
# Keepalives find a peer that vanished (a failover, a dropped NAT entry) within about a minute of silence.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}


def create_db_engine(url: str, options: PoolOptions | None = None) -> Engine:
    options = options or PoolOptions()
    if url.startswith("sqlite"):
        return sqlite_engine(url)
    timeout_ms = int(options.statement_timeout_seconds * 1000)
    engine = create_engine(
        url,
        pool_size=options.threads,
        max_overflow=options.overflow,
        # Waiting for a pooled connection costs no more than opening one.
        pool_timeout=options.connect_timeout_seconds,
        # No pre-ping (a round trip per checkout): a connection the server dropped fails its first statement,
        # SQLAlchemy then discards the whole pool's older connections, and the caller retries (Stripe on a
        # 503, the worker's retry or the sweep). Recycling bounds how stale an idle connection can get.
        pool_recycle=1800,
        connect_args={
            # A short connect timeout turns "database down" into a quick 503 instead of a hung webhook.
            "connect_timeout": options.connect_timeout_seconds,
            "options": f"-c statement_timeout={timeout_ms}",
            **KEEPALIVES,
        },
    )
    deadline = StatementDeadline(options.statement_timeout_seconds + CLIENT_GRACE_SECONDS)
    deadline.attach(engine)
    event.listen(engine.pool, "checkin", _implicit_transactions_again)
    _BUILT[engine] = (options, deadline)
    return engine


def sqlite_engine(url: str, **pool: Any) -> Engine:
    engine = create_engine(url, connect_args={"timeout": 30}, **pool)
    event.listen(engine, "connect", _tune_sqlite)
    return engine


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the web process read while a worker writes; busy_timeout waits out the other writer.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


SessionFactory = Callable[[], Session]


def driver_rows_together(
    connection: Connection, statements: list[tuple[str, Any]], *, commit: bool = False
) -> list[list[tuple[Any, ...]]]:
    """The rows of each statement (none for one that returns none), in order, sent straight through the driver on
    the connection of the caller's SQLAlchemy transaction; several in one round trip (libpq's pipeline mode).
    PostgreSQL only (psycopg: `%(name)s` parameters).

    For the worker's statements, which run for every event: SQLAlchemy's execute (events, result metadata) cost
    three times the driver's own. What SQLAlchemy did for them is kept: the engine's statement deadline, and a
    driver error raised as SQLAlchemy's (a lost connection invalidated, an outage seen as one by
    `outages_reported`). The server still runs the statements one after the other, each as its own (its own
    snapshot, taken when it starts): only the waiting between them is saved. An error in one leaves the rest
    unrun, and is raised.

    `commit`: the transaction's COMMIT goes after them, in the same round trip. SQLAlchemy's own commit then
    finds the driver's connection out of any transaction, and sends nothing (psycopg commits only a transaction
    in progress). The caller makes sure that nothing else was to be written before the commit.

    Statements that open the transaction take its BEGIN along too: psycopg sends its own alone, and waits for
    the answer (a round trip) before anything else goes (`_begin_with_the_statements`).
    """
    dbapi_connection: Any = connection.connection.dbapi_connection
    begin = _begin_with_the_statements(dbapi_connection)
    statements = [*([_BEGIN] if begin else []), *statements, *([_COMMIT] if commit else [])]
    deadline = built_with(connection.engine)[1]
    deadline.arm(dbapi_connection)
    cursors: list[Any] = []
    try:
        if len(statements) == 1:
            cursors.append(_executed(dbapi_connection, *statements[0]))
        else:
            with dbapi_connection.pipeline():
                for sql, params in statements:
                    cursors.append(_executed(dbapi_connection, sql, params))
        rows = [cursor.fetchall() if _returns_rows(cursor) else [] for cursor in cursors]
        return rows[begin : len(rows) - commit]
    except connection.dialect.loaded_dbapi.Error as error:
        sql, params = statements[min(len(cursors), len(statements)) - 1] if cursors else statements[0]
        invalidated = connection.dialect.is_disconnect(error, dbapi_connection, cursors[-1] if cursors else None)
        if invalidated:
            connection.invalidate(error)
        raise exc.DBAPIError.instance(
            sql,
            params,
            error,
            connection.dialect.loaded_dbapi.Error,
            connection_invalidated=invalidated,
            dialect=connection.dialect,
        ) from error
    finally:
        deadline.disarm(dbapi_connection)
        for cursor in cursors:
            cursor.close()


_BEGIN, _COMMIT = ("BEGIN", None), ("COMMIT", None)


def _begin_with_the_statements(dbapi_connection: Any) -> bool:
    """True when the caller's statements open the connection's transaction, and send its BEGIN themselves.

    psycopg begins a transaction (outside autocommit) with a BEGIN of its own, sent alone and waited for, even
    in pipeline mode. Switched to autocommit while no transaction is open, it sends none, and the BEGIN goes
    in the statements' own round trip; the server then holds the transaction open until its COMMIT or ROLLBACK
    as before (psycopg sends those whenever the server says a transaction is open, in either mode). The
    connection goes back to psycopg's own BEGINs when it returns to the pool (`_implicit_transactions_again`).
    """
    if dbapi_connection.autocommit or dbapi_connection.pgconn.transaction_status != _IDLE:
        return False
    dbapi_connection.autocommit = True
    return True


def _implicit_transactions_again(dbapi_connection: Any, record: Any) -> None:
    """Pool checkin (after the reset's rollback): the next user of the connection gets psycopg's own BEGINs."""
    if dbapi_connection is None or dbapi_connection.closed or not dbapi_connection.autocommit:
        return
    try:
        dbapi_connection.autocommit = False  # refused unless no transaction is open
    except Exception:  # a connection broken meanwhile, or still in a transaction: never handed out again
        record.invalidate()


_IDLE = 0  # libpq's PQTRANS_IDLE (psycopg.pq.TransactionStatus.IDLE): no transaction open


def _executed(dbapi_connection: Any, sql: str, params: Any) -> Any:
    """A cursor that ran `sql`, its placeholders already the server's: psycopg rewrites `%(name)s` on every
    execute of a statement over 4,096 bytes (its cache's bound), and the worker's joined statements are longer.
    The cursor fails as psycopg's own would; statements with no parameters go as they are, as with psycopg."""
    cursor = _raw_cursor_class(dbapi_connection.cursor_factory)(dbapi_connection)
    if params is None:
        cursor.execute(sql)
        return cursor
    query, names = _server_placeholders(sql)
    cursor.execute(query, [params[name] for name in names] if names else params)
    return cursor


@cache
def _raw_cursor_class(factory: type[Any]) -> type[Any]:
    """The connection's own cursor class, taking the server's placeholders: a cursor factory set on the
    connection (a tracer's, the tests' statement counter) still sees every statement the worker sends."""
    if issubclass(factory, RawCursorMixin):
        return factory
    return type(f"Raw{factory.__name__}", (RawCursorMixin, factory), {})


_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%s|%%")


@lru_cache(maxsize=1024)
def _server_placeholders(sql: str) -> tuple[bytes, tuple[str, ...]]:
    """`sql` with psycopg's placeholders (`%(name)s`, or positional `%s`) numbered as the server's ($1, $2, ...),
    `%%` as `%`, and the names in their order (empty for positional ones). Once per statement text."""
    names: list[str] = []
    positional = 0

    def numbered(match: re.Match[str]) -> str:
        nonlocal positional
        if match.group(0) == "%%":
            return "%"
        if match.group(1) is None:
            positional += 1
            return f"${positional}"
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    query = _PLACEHOLDER.sub(numbered, sql)
    if names and positional:
        raise ValueError("a statement takes named or positional parameters, not both")
    return query.encode(), tuple(names)


def _returns_rows(cursor: Any) -> bool:
    """`cursor.description is not None` without building its Column objects (a cost on every statement)."""
    result = cursor.pgresult
    return result is not None and (result.nfields > 0 or result.status == _TUPLES_OK)


_TUPLES_OK = 2  # libpq's PGRES_TUPLES_OK (psycopg.pq.ExecStatus.TUPLES_OK): a statement that returns rows, maybe none


def built_with(engine: Engine) -> tuple[PoolOptions, StatementDeadline]:
    """The options and the statement deadline a PostgreSQL engine of `create_db_engine` was built with."""
    return _BUILT[engine]


def session_factory(engine: Engine) -> SessionFactory:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def outages_reported() -> Iterator[None]:
    """Turn the driver's "cannot reach the database" errors into StorageUnavailable (a 503, a retry later)."""
    try:
        yield
    except _UNAVAILABLE as error:
        raise StorageUnavailable(str(error).splitlines()[0]) from error


@contextmanager
def transaction(new_session: SessionFactory) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on error, and say so when the database is down."""
    with outages_reported(), new_session() as session, session.begin():
        yield session


def ping(engine: Engine) -> None:
    with outages_reported(), engine.connect() as connection:
        connection.exec_driver_sql("SELECT 1")


@cache
def latest_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config("")).get_current_head()
    assert head is not None, "the package ships no migrations"
    return head


def schema_revisions(engine: Engine) -> tuple[str | None, str]:
    """(the revision the database is at, None without a schema; the latest migration's revision)."""
    from alembic.runtime.migration import MigrationContext

    with outages_reported(), engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    return current, latest_revision()


def upgrade(url: str, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["database_url"] = url
    return config
