"""Engines, transactions and migrations: the one home of SQLAlchemy's plumbing and Alembic."""

from __future__ import annotations

import re
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import cache, cached_property
from pathlib import Path
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection, Engine, TextualSelect, create_engine, event, exc, text
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import PoolProxiedConnection

from .errors import StorageUnavailable
from .forks import reset_in_forked_child
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
        return _sqlite_engine(url)
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
    _BUILT[engine] = (options, deadline)
    return engine


def _sqlite_engine(url: str, **pool: Any) -> Engine:
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


@dataclass(frozen=True)
class Read:
    """A statement of the read path: SQL with `:name` parameters, and the result columns that SQLAlchemy must
    type (JSON, booleans, aware datetimes) where the driver does not (SQLite)."""

    sql: str
    types: Mapping[str, Any] = field(default_factory=dict)

    @cached_property
    def statement(self) -> TextualSelect:
        return text(self.sql).columns(**self.types)

    @cached_property
    def driver_sql(self) -> str:
        """The same SQL in psycopg's parameter style."""
        return re.sub(_PARAMETER, r"%(\1)s", self.sql)

    @cached_property
    def numbered(self) -> tuple[bytes, tuple[str, ...]]:
        """The same SQL with libpq's `$1, $2 …`, and the parameters' names in that order."""
        names: list[str] = []

        def number(match: re.Match[str]) -> str:
            if match[1] not in names:
                names.append(match[1])
            return f"${names.index(match[1]) + 1}"

        return re.sub(_PARAMETER, number, self.sql).encode(), tuple(names)


_PARAMETER = r"(?<![:\w]):(\w+)"
_LIBPQ_SUCCEEDED = (1, 2)  # libpq's PGRES_COMMAND_OK, PGRES_TUPLES_OK (psycopg.pq.ExecStatus)


class Reads(Protocol):
    def rows(self, read: Read, params: dict[str, Any]) -> list[Any]:
        """The rows of one read, as tuples; raises StorageUnavailable when the database cannot be reached."""

    def flag(self, read: Read, params: dict[str, str]) -> bool | None:
        """The first column of the first row as a boolean (None: no row), for a read of one boolean column
        with text parameters; raises StorageUnavailable as `rows` does."""


class EngineReads:
    """Each read on a connection checked out of the engine's pool for it: an in-memory SQLite database, which
    exists only on the engine's own connections."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def rows(self, read: Read, params: dict[str, Any]) -> list[Any]:
        with outages_reported(), self._engine.connect() as connection:
            return [tuple(row) for row in connection.execute(read.statement, params)]

    def flag(self, read: Read, params: dict[str, str]) -> bool | None:
        rows = self.rows(read, params)
        return bool(rows[0][0]) if rows else None


# A kept connection is handed back and a fresh one taken after this long, as the pool recycles its own.
RECYCLE_SECONDS = 1800


@dataclass(eq=False)
class _Held:
    connection: PoolProxiedConnection
    cursor: Any  # the driver's, used for every read of this thread
    recycle_at: float
    returned: weakref.finalize[[], _Held] = field(init=False)  # hands the connection back to the pool
    prepared: dict[bytes, bytes] = field(default_factory=dict)  # PostgreSQL: libpq statement names, by SQL


# Turns a column of SQLite's plain values into what PostgreSQL's driver returns (JSON, booleans, aware datetimes).
_Typing = list[tuple[int, Callable[[Any], Any]]]


class ThreadConnections:
    """Reads on a connection each reading thread keeps between reads, from a pool of their own (so they never
    take the connections the rest of the process needs): a read is then the driver's execute of a statement it
    prepared on that connection, with no checkout, no transaction and no SQLAlchemy. (The receiver's
    group-commit writer keeps one the same way for its writes, on PostgreSQL: `run`.)

    PostgreSQL: one round trip; each connection autocommits (every read is one statement, one snapshot), speaks
    UTC and keeps the engine's statement deadline. SQLite: no round trip at all, so SQLAlchemy's checkout and
    result rows were nine tenths of a read; a read here is typed as SQLAlchemy would (`Read.types`), and in
    autocommit, so that a kept connection never holds a snapshot between reads. A connection is dropped after
    any error: the next read takes a fresh one.
    """

    def __init__(self, engine: Engine) -> None:
        url = engine.url.render_as_string(hide_password=False)
        self._postgres = engine.dialect.name == "postgresql"
        if self._postgres:
            options, _ = _BUILT[engine]
            self._engine = create_db_engine(url, replace(options, overflow=-1))
            self._deadline: StatementDeadline | None = _BUILT[self._engine][1]
        else:
            self._engine = _sqlite_engine(url, pool_size=1, max_overflow=-1)
            self._deadline = None
        self._typings: dict[str, _Typing] = {}  # SQLite: by statement
        dbapi = self._engine.dialect.loaded_dbapi
        self._unavailable = (dbapi.OperationalError, dbapi.InterfaceError)
        self._local = threading.local()
        reset_in_forked_child(self._forget_the_parents)

    @staticmethod
    def suit(engine: Engine) -> bool:
        """Whether connections of their own can read this database (an in-memory SQLite one cannot)."""
        return engine.dialect.name == "postgresql" or engine.url.database not in (None, "", ":memory:")

    def rows(self, read: Read, params: dict[str, Any]) -> list[Any]:
        held = self._held()
        dbapi_connection = held.connection.dbapi_connection
        if self._deadline is not None:
            self._deadline.arm(dbapi_connection)
        try:
            if self._postgres:
                held.cursor.execute(read.driver_sql, params)
                return list(held.cursor.fetchall())
            held.cursor.execute(read.sql, params)
            rows = held.cursor.fetchall()
            typing = self._typing(read, held.cursor.description)
            return rows if not typing else [_typed(row, typing) for row in rows]
        except BaseException as error:
            self._drop_after(held, error)
            raise
        finally:
            if self._deadline is not None:
                self._deadline.disarm(dbapi_connection)

    def flag(self, read: Read, params: dict[str, str]) -> bool | None:
        """PostgreSQL: a statement libpq prepared on the kept connection, its answer read as text (`t`/`f`),
        none of the driver's execute machinery, which was a third of a lookup's time on a local server."""
        if not self._postgres:
            return self._sqlite_flag(read, params)
        held = self._held()
        dbapi_connection: Any = held.connection.dbapi_connection
        assert self._deadline is not None
        self._deadline.arm(dbapi_connection)
        try:
            pgconn = dbapi_connection.pgconn
            sql, names = read.numbered
            name = held.prepared.get(sql)
            if name is None:
                name = f"entitlement_sync_{len(held.prepared)}".encode()
                _succeeded(pgconn.prepare(name, sql), pgconn)
                held.prepared[sql] = name
            result = _succeeded(pgconn.exec_prepared(name, [params[key].encode() for key in names]), pgconn)
            return None if result.ntuples == 0 else result.get_value(0, 0) == b"t"
        except BaseException as error:
            self._drop_after(held, error)
            raise
        finally:
            self._deadline.disarm(dbapi_connection)

    def run(self, work: Callable[[Any], T]) -> T:
        """`work(cursor)` with the cursor of this thread's kept driver connection (PostgreSQL only: psycopg, in
        autocommit: a statement alone is its own transaction; `with cursor.connection.transaction():` makes one
        of several), under the statement deadline. StorageUnavailable when the database cannot be reached; the
        connection is dropped after any error."""
        held = self._held()
        dbapi_connection = held.connection.dbapi_connection
        assert self._deadline is not None, "run() is for PostgreSQL"
        self._deadline.arm(dbapi_connection)
        try:
            return work(held.cursor)
        except BaseException as error:
            self._drop_after(held, error)
            raise
        finally:
            self._deadline.disarm(dbapi_connection)

    def _drop_after(self, held: _Held, error: BaseException) -> None:
        """After any error on a kept connection: drop it (the next read takes a fresh one), and raise
        StorageUnavailable when the database could not be reached (the caller re-raises any other error)."""
        self._drop(held)
        if isinstance(error, self._unavailable):
            raise StorageUnavailable(str(error).splitlines()[0]) from error

    def release(self) -> None:
        """Hand back the connection this thread keeps (a thread that stops for good before the process)."""
        held: _Held | None = getattr(self._local, "held", None)
        if held is not None:
            self._local.held = None
            held.returned()

    def _sqlite_flag(self, read: Read, params: dict[str, str]) -> bool | None:
        held = self._held()
        try:
            # All of them: a statement read to its end is reset, and holds no snapshot between reads.
            rows = held.cursor.execute(read.sql, params).fetchall()
        except BaseException as error:
            self._drop_after(held, error)
            raise
        return bool(rows[0][0]) if rows else None

    def kept(self) -> int:
        """How many connections reading threads keep now."""
        return int(self._engine.pool.checkedout())  # type: ignore[attr-defined]

    def close(self) -> None:
        self._engine.dispose()

    def _typing(self, read: Read, description: Any) -> _Typing:
        typing = self._typings.get(read.sql)
        if typing is None:
            typing = []
            for index, column in enumerate(description):
                type_ = read.types.get(column[0])
                dialect = self._engine.dialect
                processor = type_ and type_.dialect_impl(dialect).result_processor(dialect, None)
                if processor is not None:
                    typing.append((index, processor))
            self._typings[read.sql] = typing
        return typing

    def _forget_the_parents(self) -> None:
        """In a forked child: the parent's connections are the parent's (never closed from here)."""
        self._engine.dispose(close=False)
        self._local = threading.local()

    def _held(self) -> _Held:
        held: _Held | None = getattr(self._local, "held", None)
        if held is not None and time.monotonic() < held.recycle_at:
            return held
        if held is not None:
            held.returned()
        try:
            with outages_reported():
                connection = self._engine.raw_connection()
        except self._unavailable as error:  # the pool's connect raises the driver's own error
            raise StorageUnavailable(str(error).splitlines()[0]) from error
        try:
            dbapi_connection: Any = connection.dbapi_connection
            if self._postgres:
                dbapi_connection.autocommit = True
                dbapi_connection.execute("SET TIME ZONE 'UTC'")
                _parse_json_fast(dbapi_connection)
            else:
                dbapi_connection.isolation_level = None  # sqlite3's autocommit: no implicit BEGIN
        except BaseException:
            connection.invalidate()
            connection.close()
            raise
        held = _Held(connection, connection.dbapi_connection.cursor(), time.monotonic() + RECYCLE_SECONDS)  # type: ignore[union-attr]
        # Back to the pool when dropped, recycled, or its thread ends (the thread's locals go with it).
        held.returned = weakref.finalize(held, connection.close)
        held.returned.atexit = False
        self._local.held = held
        return held

    def _drop(self, held: _Held) -> None:
        self._local.held = None
        held.connection.invalidate()
        held.returned()


def _parse_json_fast(dbapi_connection: Any) -> None:
    """JSON columns (an answer's `sources`) parsed by orjson: the standard library's parser was 7 % of an HTTP
    read's time in process (py-spy), with the answer's own encoding already orjson's (fastjson)."""
    from psycopg.types.json import set_json_loads

    from .fastjson import loads

    set_json_loads(loads, dbapi_connection)


def _succeeded(result: Any, pgconn: Any) -> Any:
    """libpq's result, or the driver's error for it: a lost connection as OperationalError (unavailable)."""
    if result.status in _LIBPQ_SUCCEEDED:
        return result
    from psycopg import OperationalError, errors, pq

    if pgconn.status != pq.ConnStatus.OK:
        raise OperationalError(result.get_error_message() or "the connection to the server was lost")
    raise errors.error_from_result(result)


def _typed(row: tuple[Any, ...], typing: _Typing) -> tuple[Any, ...]:
    values = list(row)
    for index, processor in typing:
        values[index] = processor(values[index])
    return tuple(values)


def driver_rows(connection: Connection, sql: str, params: Any) -> list[tuple[Any, ...]]:
    """The rows of one statement (none for a statement that returns none) sent straight through the driver, on
    the connection of the caller's SQLAlchemy transaction. PostgreSQL only (psycopg: `%(name)s` parameters).

    For the worker's statements, which run for every event: SQLAlchemy's execute (events, result metadata) cost
    three times the driver's own. What SQLAlchemy did for them is kept: the engine's statement deadline, and a
    driver error raised as SQLAlchemy's (a lost connection invalidated, an outage seen as one by
    `outages_reported`).
    """
    return driver_rows_together(connection, [(sql, params)])[0]


def driver_rows_together(connection: Connection, statements: list[tuple[str, Any]]) -> list[list[tuple[Any, ...]]]:
    """`driver_rows` of several statements sent in one round trip (libpq's pipeline mode), their rows in order.

    The server still runs them one after the other, each as its own statement (its own snapshot, taken when it
    starts): only the waiting between them is saved. An error in one leaves the rest unrun, and is raised.
    """
    dbapi_connection: Any = connection.connection.dbapi_connection
    deadline = _BUILT[connection.engine][1]
    deadline.arm(dbapi_connection)
    cursors: list[Any] = []
    try:
        if len(statements) == 1:
            cursors.append(dbapi_connection.cursor())
            cursors[0].execute(*statements[0])
        else:
            with dbapi_connection.pipeline():
                for sql, params in statements:
                    cursors.append(dbapi_connection.cursor())
                    cursors[-1].execute(sql, params)
        return [cursor.fetchall() if cursor.description is not None else [] for cursor in cursors]
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
