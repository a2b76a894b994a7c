"""Upgrading to the access feed publishes the flips already in the history, so `after=0` still means all."""

from sqlalchemy import create_engine, text

from entitlement_sync.db import upgrade


def test_the_upgrade_numbers_past_flips_in_id_order_and_skips_reason_only_changes(tmp_path):
    url = f"sqlite:///{tmp_path / 'upgrade.db'}"
    upgrade(url, "0005")  # the revision before the feed
    engine = create_engine(url)
    columns = "customer_id, lookup_key, change, granted, reason, sources, cause, changed_at"
    with engine.begin() as connection:
        connection.execute(
            text(
                f"INSERT INTO effective_access_changes ({columns}) VALUES "
                "('cus_1', 'api', 'granted', 1, 'stripe_entitlement', "
                '\'[{"kind": "entitlement", "id": "ent_1", "detail": "feat_api"}]\', \'evt_1\', \'2026-01-01\'), '
                "('cus_1', 'api', 'updated', 1, 'manual_grant', '[]', 'override:1', '2026-01-02'), "
                "('cus_2', 'sso', 'revoked', 0, 'manual_denial', '[]', 'override:2', '2026-01-03')"
            )
        )
    upgrade(url)
    with engine.connect() as connection:
        feed = connection.execute(
            text("SELECT cursor, change_id, customer_id, change, features, cause FROM access_feed ORDER BY cursor")
        ).all()
        last = connection.scalar(text("SELECT last_cursor FROM access_feed_state"))
    engine.dispose()
    assert [tuple(row) for row in feed] == [
        (1, 1, "cus_1", "granted", '["feat_api"]', "evt_1"),
        (2, 3, "cus_2", "revoked", "[]", "override:2"),
    ]
    assert last == 2
