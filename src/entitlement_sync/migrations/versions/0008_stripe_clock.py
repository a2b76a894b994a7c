"""Stripe's clock of the state each customer's rows hold, so complete summary payloads can be applied at once

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 11:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("customer_sync_state") as batch:
        batch.add_column(sa.Column("state_seq", sa.BigInteger(), nullable=False, server_default=sa.text("0")))
        batch.add_column(sa.Column("as_of_from", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("as_of_until", sa.BigInteger(), nullable=True))
    # Rows written before this migration came from a fetch of unknown date: as_of stays unknown (every payload is
    # in doubt until the next fetch), and the last applied ticket is the last write.
    op.execute("UPDATE customer_sync_state SET state_seq = applied_seq")


def downgrade() -> None:
    with op.batch_alter_table("customer_sync_state") as batch:
        batch.drop_column("as_of_until")
        batch.drop_column("as_of_from")
        batch.drop_column("state_seq")
