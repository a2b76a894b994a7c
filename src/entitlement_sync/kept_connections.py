"""Reads on connections kept per thread (`ThreadConnections`): the hot read path, and the receiver's writer.

`db.py` builds the engines; this module keeps connections of its own beside them and talks to the driver
directly, with no checkout, no transaction and no SQLAlchemy per read. The statements (`Read`) and the port
(`Reads`) are in `reads.py`."""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlalchemy.pool import PoolProxiedConnection

from .db import built_with, create_db_engine, outages_reported, sqlite_engine
from .errors import StorageUnavailable
from .forks import reset_in_forked_child
from .reads import Read
from .statement_deadline import StatementDeadline

T = TypeVar("T")

_LIBPQ_SUCCEEDED = (1, 2)  # libpq's PGRES_COMMAND_OK, PGRES_TUPLES_OK (psycopg.pq.ExecStatus)


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
            options, _ = built_with(engine)
            self._engine = create_db_engine(url, replace(options, overflow=-1))
            self._deadline: StatementDeadline | None = built_with(self._engine)[1]
        else:
            self._engine = sqlite_engine(url, pool_size=1, max_overflow=-1)
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
        except BaseException as error:
            connection.invalidate()
            connection.close()
            if isinstance(error, self._unavailable):  # the server went away between the connect and the setup
                raise StorageUnavailable(str(error).splitlines()[0]) from error
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
