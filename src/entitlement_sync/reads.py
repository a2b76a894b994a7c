"""The read path's statements (`Read`: SQL once, in each driver's parameter style), the `Reads` port that runs
them, and `EngineReads`, which runs them on the engine's own connections; `kept_connections.ThreadConnections`
runs them on connections kept per thread."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

from sqlalchemy import Engine, TextualSelect, text

from .db import outages_reported


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
