"""Engines, transactions and migrations: the one home of SQLAlchemy's plumbing and Alembic."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, exc
from sqlalchemy.orm import Session, sessionmaker

from .errors import StorageUnavailable
from .statement_deadline import StatementDeadline

MIGRATIONS = Path(__file__).parent / "migrations"

# Errors that mean "the database is not there right now", as opposed to a bug in our SQL.
_UNAVAILABLE = (exc.OperationalError, exc.InterfaceError, exc.TimeoutError)


@dataclass(frozen=True)
class PoolOptions:
    threads: int = 1  # threads of this process that use the database at once: one connection each
    statement_timeout_seconds: float = 3.0
    connect_timeout_seconds: int = 3

    @property
    def overflow(self) -> int:
        # A few more for the odd extra user (a readiness probe, the sweep's lock), never a second pool's worth.
        return 2


# The server cancels a statement at statement_timeout; the client gives a frozen server this much longer.
CLIENT_GRACE_SECONDS = 0.5
# Keepalives find a peer that vanished (a failover, a dropped NAT entry) within about a minute of silence.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}


def create_db_engine(url: str, options: PoolOptions | None = None) -> Engine:
    options = options or PoolOptions()
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _tune_sqlite)
        return engine
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
    StatementDeadline(options.statement_timeout_seconds + CLIENT_GRACE_SECONDS).attach(engine)
    return engine


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the web process read while a worker writes; busy_timeout waits out the other writer.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


SessionFactory = Callable[[], Session]


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


@contextmanager
def autocommitted(engine: Engine) -> Iterator[Connection]:
    """A connection on which each statement is its own transaction: no BEGIN, no COMMIT round trips. For a use
    case whose whole unit of work is one statement (PostgreSQL's webhook receiver)."""
    with outages_reported(), engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        yield connection


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
