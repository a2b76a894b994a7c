"""The plan PostgreSQL caches for a prepared statement: tests of the statements that run for every webhook or
event, which must not turn into a scan of a table that only grows."""

from __future__ import annotations

from typing import Any


def generic_plan(container: Any, sql: str, values: dict[str, Any]) -> str:
    """EXPLAIN of the plan a prepared statement falls back to after its first executions, planned without its
    parameters (as for a statement the driver prepared), in a transaction rolled back."""
    with container.engine.connect() as connection:
        cursor = connection.connection.driver_connection.cursor()
        cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        cursor.execute("EXPLAIN " + sql, values, prepare=True)
        plan = "\n".join(row[0] for row in cursor.fetchall())
        connection.rollback()
    return plan
