"""Inbox: waiting for Stripe (retry_at, unavailable_since, waits) and exclusive claims (claimed_by)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 09:00:00.000000

The new statuses (`waiting`, `superseded`) need no schema change: `status` is a plain string column.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("stripe_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claimed_by", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("unavailable_since", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("waits", sa.Integer(), server_default=sa.text("0"), nullable=False))
        batch_op.add_column(sa.Column("retry_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    # Events left waiting would be stranded by the older code, which knows no such status: hand them back.
    op.execute("UPDATE stripe_events SET status = 'failed' WHERE status = 'waiting'")
    with op.batch_alter_table("stripe_events", schema=None) as batch_op:
        batch_op.drop_column("retry_at")
        batch_op.drop_column("waits")
        batch_op.drop_column("unavailable_since")
        batch_op.drop_column("claimed_by")
