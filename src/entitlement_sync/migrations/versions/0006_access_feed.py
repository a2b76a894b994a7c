"""The access feed: access flips numbered in commit order, for `GET /v1/access-changes`

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 11:30:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


_COLUMNS = ("id", "customer_id", "lookup_key", "change", "sources", "cause", "changed_at")


def upgrade() -> None:
    feed = op.create_table(
        "access_feed",
        sa.Column("cursor", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("change_id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.String(length=255), nullable=False),
        sa.Column("lookup_key", sa.String(length=80), nullable=False),
        sa.Column("change", sa.String(length=10), nullable=False),
        sa.Column("features", sa.JSON(), nullable=False),
        sa.Column("cause", sa.String(length=255), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("cursor", name=op.f("pk_access_feed")),
    )
    state = op.create_table(
        "access_feed_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("last_cursor", sa.BigInteger(), nullable=False),
        sa.Column("pruned_through", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_feed_state")),
    )
    last = _backfill(feed)
    op.bulk_insert(state, [{"id": 1, "last_cursor": last, "pruned_through": 0}])


def _backfill(feed: sa.Table) -> int:
    """The flips recorded before this release, in id order (no writer of the feed runs during the upgrade),
    so that `after=0` still means "from the beginning". Returns the last cursor."""
    history = sa.table(
        "effective_access_changes",
        *(sa.column(name) for name in ("id", "customer_id", "lookup_key", "change", "cause")),
        sa.column("sources", sa.JSON()),
        sa.column("changed_at", sa.DateTime(timezone=True)),
    )
    rows = (
        op.get_bind()
        .execute(
            sa.select(*(history.c[name] for name in _COLUMNS))
            .where(history.c.change.in_(["granted", "revoked"]))
            .order_by(history.c.id)
        )
        .all()
    )
    cursor, batch = 0, []
    for change_id, customer_id, lookup_key, change, sources, cause, changed_at in rows:
        cursor += 1
        features = sorted({s["detail"] for s in sources or () if s.get("kind") in ("entitlement", "product")})
        batch.append(
            {
                "cursor": cursor,
                "change_id": change_id,
                "customer_id": customer_id,
                "lookup_key": lookup_key,
                "change": change,
                "features": features,
                "cause": cause,
                "changed_at": changed_at,
            }
        )
        if len(batch) == 1000:
            op.bulk_insert(feed, batch)
            batch = []
    if batch:
        op.bulk_insert(feed, batch)
    return cursor


def downgrade() -> None:
    op.drop_table("access_feed_state")
    op.drop_table("access_feed")
