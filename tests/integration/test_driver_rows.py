"""db.driver_rows_together sends statements with the server's own placeholders ($1...), numbered once per statement
text, so a long statement is not rewritten on every execute; what the server runs must be what the statement said."""

from __future__ import annotations

import pytest

from entitlement_sync import db


def test_named_placeholders_are_numbered_once_each_and_percent_signs_kept() -> None:
    query, names = db._server_placeholders("SELECT %(a)s, %(b)s, %(a)s || '%%'")

    assert query == b"SELECT $1, $2, $1 || '%'"
    assert names == ("a", "b")


def test_positional_placeholders_are_numbered_in_order() -> None:
    assert db._server_placeholders("SELECT pg_advisory_xact_lock(%s), %s") == (
        b"SELECT pg_advisory_xact_lock($1), $2",
        (),
    )


def test_a_statement_mixing_named_and_positional_placeholders_is_refused() -> None:
    with pytest.raises(ValueError, match="not both"):
        db._server_placeholders("SELECT %(a)s, %s")


def test_the_server_gets_each_named_value_where_the_statement_names_it(container) -> None:
    if container.engine.dialect.name != "postgresql":
        pytest.skip("the driver path is PostgreSQL's")
    long_tail = " ".join(f"AND {n} = {n}" for n in range(600))  # over psycopg's 4,096-byte cache bound
    sql = f"SELECT %(b)s::text, %(a)s::int + 1, %(b)s::text || '%%' WHERE true {long_tail}"
    with container.engine.connect() as connection:
        first, second = db.driver_rows_together(
            connection, [(sql, {"a": 41, "b": "x", "unused": None}), ("SELECT %s::int * 2", [21])]
        )
        connection.rollback()

    assert first == [("x", 42, "x%")]
    assert second == [(42,)]
