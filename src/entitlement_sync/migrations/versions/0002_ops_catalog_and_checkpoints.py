"""Ops: the feature catalog, product→feature links, and the `sync all` checkpoint

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 11:38:54.443637
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "features",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("lookup_key", sa.String(length=80), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_features")),
    )
    with op.batch_alter_table("features", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_features_lookup_key"), ["lookup_key"], unique=False)

    op.create_table(
        "product_features",
        sa.Column("product_id", sa.String(length=255), nullable=False),
        sa.Column("feature_id", sa.String(length=255), nullable=False),
        sa.Column("product_feature_id", sa.String(length=255), nullable=False),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("product_id", "feature_id", name=op.f("pk_product_features")),
    )
    with op.batch_alter_table("product_features", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_product_features_feature_id"), ["feature_id"], unique=False)

    op.create_table(
        "sync_checkpoints",
        sa.Column("name", sa.String(length=50), nullable=False),
        sa.Column("last_customer_id", sa.String(length=255), nullable=True),
        sa.Column("checked", sa.Integer(), nullable=False),
        sa.Column("granted", sa.Integer(), nullable=False),
        sa.Column("revoked", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_sync_checkpoints")),
    )


def downgrade() -> None:
    op.drop_table("sync_checkpoints")
    with op.batch_alter_table("product_features", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_product_features_feature_id"))

    op.drop_table("product_features")
    with op.batch_alter_table("features", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_features_lookup_key"))

    op.drop_table("features")
