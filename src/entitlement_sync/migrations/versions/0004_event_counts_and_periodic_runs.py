"""Event counts kept by triggers (for /metrics) and the periodic-run lease (for the daily prune)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 08:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# PostgreSQL: statement-level triggers with transition tables, so a batch of 1,000 rows costs one delta row
# per status, not 1,000. They append (never update a shared row): concurrent writers never wait on each other.
_PG_FUNCTION = """
CREATE OR REPLACE FUNCTION entitlement_sync_count_event_statuses() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO event_status_deltas (status, delta) SELECT status, count(*) FROM new_rows GROUP BY status;
  ELSIF TG_OP = 'DELETE' THEN
    INSERT INTO event_status_deltas (status, delta) SELECT status, -count(*) FROM old_rows GROUP BY status;
  ELSE
    INSERT INTO event_status_deltas (status, delta)
    SELECT status, sum(change) FROM (
      SELECT status, -1 AS change FROM old_rows UNION ALL SELECT status, 1 AS change FROM new_rows
    ) AS moves GROUP BY status HAVING sum(change) <> 0;
  END IF;
  RETURN NULL;
END $$
"""
_PG_TRIGGERS = {
    "insert": "AFTER INSERT ON stripe_events REFERENCING NEW TABLE AS new_rows",
    "update": "AFTER UPDATE ON stripe_events REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
    "delete": "AFTER DELETE ON stripe_events REFERENCING OLD TABLE AS old_rows",
}


def _sqlite_add(row: str, sign: str) -> str:
    return (
        f"INSERT OR IGNORE INTO event_status_counts (status, count) VALUES ({row}.status, 0); "
        f"UPDATE event_status_counts SET count = count {sign} 1 WHERE status = {row}.status;"
    )


# SQLite: row-level triggers (it has no others) that update the counts directly; it has one writer at a time.
_SQLITE_TRIGGERS = {
    "insert": f"AFTER INSERT ON stripe_events BEGIN {_sqlite_add('NEW', '+')} END",
    "update": (
        "AFTER UPDATE OF status ON stripe_events WHEN OLD.status IS NOT NEW.status "
        f"BEGIN {_sqlite_add('OLD', '-')} {_sqlite_add('NEW', '+')} END"
    ),
    "delete": f"AFTER DELETE ON stripe_events BEGIN {_sqlite_add('OLD', '-')} END",
}


def upgrade() -> None:
    op.create_table(
        "event_status_counts",
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("status", name=op.f("pk_event_status_counts")),
    )
    op.create_table(
        "event_status_deltas",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("delta", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_status_deltas")),
    )
    op.create_table(
        "periodic_runs",
        sa.Column("name", sa.String(length=50), nullable=False),
        sa.Column("last_started_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_periodic_runs")),
    )
    # Triggers first: creating them locks stripe_events against writers until this migration commits, so
    # the counts below and the triggers' deltas never miss or double-count a row.
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_FUNCTION)
        for operation, timing in _PG_TRIGGERS.items():
            op.execute(
                f"CREATE TRIGGER stripe_events_count_{operation} {timing} "
                "FOR EACH STATEMENT EXECUTE FUNCTION entitlement_sync_count_event_statuses()"
            )
    else:
        for operation, body in _SQLITE_TRIGGERS.items():
            op.execute(f"CREATE TRIGGER stripe_events_count_{operation} {body}")
    op.execute(
        "INSERT INTO event_status_counts (status, count) SELECT status, count(*) FROM stripe_events GROUP BY status"
    )


def downgrade() -> None:
    for operation in _PG_TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS stripe_events_count_{operation}" + _on_table())
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS entitlement_sync_count_event_statuses()")
    op.drop_table("periodic_runs")
    op.drop_table("event_status_deltas")
    op.drop_table("event_status_counts")


def _on_table() -> str:
    return " ON stripe_events" if op.get_bind().dialect.name == "postgresql" else ""
