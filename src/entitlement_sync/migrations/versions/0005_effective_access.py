"""Effective access: the policy's answers, their history, the operator's grants and denials

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 08:54:40.926189
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "access_overrides",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("customer_id", sa.String(length=255), nullable=False),
        sa.Column("lookup_key", sa.String(length=80), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_by", sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_overrides")),
    )
    with op.batch_alter_table("access_overrides", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_access_overrides_customer_id"), ["customer_id"], unique=False)

    effective_access = op.create_table(
        "effective_access",
        sa.Column("customer_id", sa.String(length=255), nullable=False),
        sa.Column("lookup_key", sa.String(length=80), nullable=False),
        sa.Column("granted", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String(length=40), nullable=False),
        sa.Column("sources", sa.JSON(), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("review_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("customer_id", "lookup_key", name=op.f("pk_effective_access")),
    )
    with op.batch_alter_table("effective_access", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_effective_access_review_at"), ["review_at"], unique=False)

    op.create_table(
        "effective_access_changes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("customer_id", sa.String(length=255), nullable=False),
        sa.Column("lookup_key", sa.String(length=80), nullable=False),
        sa.Column("change", sa.String(length=10), nullable=False),
        sa.Column("granted", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String(length=40), nullable=False),
        sa.Column("previous_reason", sa.String(length=40), nullable=True),
        sa.Column("sources", sa.JSON(), nullable=False),
        sa.Column("cause", sa.String(length=255), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_effective_access_changes")),
    )
    with op.batch_alter_table("effective_access_changes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_effective_access_changes_customer_id"), ["customer_id"], unique=False)

    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("past_due_since", sa.DateTime(timezone=True), nullable=True))
    # The grace of a subscription already past_due runs from the last time we heard of it.
    op.execute("UPDATE subscriptions SET past_due_since = updated_at WHERE status = 'past_due'")
    _seed_effective_access(effective_access)


def _seed_effective_access(effective_access: sa.Table) -> None:
    """Readers switch to `effective_access` with this release: seed it with what the default policy says
    (Stripe's entitlements, unchanged), so nobody loses access at the upgrade. A deployment that turns rules
    on runs `entitlement-sync access recompute --all` once."""
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT customer_id, lookup_key, feature_id, entitlement_id FROM entitlements"))
    by_key: dict[tuple[str, str], list[dict[str, str]]] = {}
    for customer_id, lookup_key, feature_id, entitlement_id in rows:
        source = {"kind": "entitlement", "id": entitlement_id, "detail": feature_id}
        by_key.setdefault((customer_id, lookup_key), []).append(source)
    now = datetime.now(UTC)
    seeded = [
        {
            "customer_id": customer_id,
            "lookup_key": lookup_key,
            "granted": True,
            "reason": "stripe_entitlement",
            "sources": sources,
            "since": now,
            "computed_at": now,
            "review_at": None,
        }
        for (customer_id, lookup_key), sources in by_key.items()
    ]
    if seeded:
        op.bulk_insert(effective_access, seeded)


def downgrade() -> None:
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.drop_column("past_due_since")

    with op.batch_alter_table("effective_access_changes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_effective_access_changes_customer_id"))

    op.drop_table("effective_access_changes")
    with op.batch_alter_table("effective_access", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_effective_access_review_at"))

    op.drop_table("effective_access")
    with op.batch_alter_table("access_overrides", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_access_overrides_customer_id"))

    op.drop_table("access_overrides")
