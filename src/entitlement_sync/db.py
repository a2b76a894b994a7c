"""Engines, transactions and migrations: the one home of SQLAlchemy's plumbing and Alembic."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.orm import Session, sessionmaker

from .errors import StorageUnavailable

MIGRATIONS = Path(__file__).parent / "migrations"

# Errors that mean "the database is not there right now", as opposed to a bug in our SQL.
_UNAVAILABLE = (exc.OperationalError, exc.InterfaceError, exc.TimeoutError)


def create_db_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _tune_sqlite)
        return engine
    # A short connect timeout turns "database down" into a quick 503 instead of a hung webhook.
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=5,
        pool_timeout=5,
        connect_args={"connect_timeout": 3},
    )


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
def transaction(new_session: SessionFactory) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on error, and say so when the database is down."""
    try:
        with new_session() as session, session.begin():
            yield session
    except _UNAVAILABLE as error:
        raise StorageUnavailable(str(error).splitlines()[0]) from error


def ping(engine: Engine) -> None:
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
    except _UNAVAILABLE as error:
        raise StorageUnavailable(str(error).splitlines()[0]) from error


def schema_revisions(engine: Engine) -> tuple[str | None, str]:
    """(the revision the database is at, None without a schema; the latest migration's revision)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config(str(engine.url))).get_current_head() or ""
    try:
        with engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
    except _UNAVAILABLE as error:
        raise StorageUnavailable(str(error).splitlines()[0]) from error
    return current, head


def upgrade(url: str, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["database_url"] = url
    return config
