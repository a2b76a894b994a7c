"""Upgrading to effective access keeps everyone's access: the migration seeds it from Stripe's mirror."""

from sqlalchemy import create_engine, text

from entitlement_sync.db import upgrade


def test_the_upgrade_seeds_effective_access_from_the_mirror(tmp_path):
    url = f"sqlite:///{tmp_path / 'upgrade.db'}"
    upgrade(url, "0004")  # the revision before effective access
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO entitlements (customer_id, feature_id, lookup_key, entitlement_id, granted_at) VALUES "
                "('cus_1', 'feat_old', 'reports', 'ent_1', '2026-01-01'), "
                "('cus_1', 'feat_new', 'reports', 'ent_2', '2026-01-01'), "
                "('cus_2', 'feat_api', 'api_access', 'ent_3', '2026-01-01')"
            )
        )
    upgrade(url)
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT customer_id, lookup_key, granted, reason FROM effective_access ORDER BY customer_id")
        ).all()
    engine.dispose()
    assert [tuple(row) for row in rows] == [
        ("cus_1", "reports", 1, "stripe_entitlement"),
        ("cus_2", "api_access", 1, "stripe_entitlement"),
    ]
