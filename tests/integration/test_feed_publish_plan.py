"""The feed's one publishing statement (store.feed) looks up each change it numbers in the history's primary key,
whatever plan the server caches for it: the history only grows, and a scan of it per published batch would make
every write slower than the last. Same trap as the receiver's batch (test_inbox_batch.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import text

from entitlement_sync.store import feed

from .plans import generic_plan


def plan_of_a_publish(container: Any) -> str:
    entries = [
        {"place": 1, "change_id": 1, "customer_id": "cus_1", "lookup_key": "api_access", "change": "granted",
         "features": ["feat_api"], "cause": "evt_1", "changed_at": "2026-11-29T00:00:00+00:00"},
    ]  # fmt: skip
    return generic_plan(container, feed._PUBLISH, {"id": 1, "entries": json.dumps(entries), "channel": feed.CHANNEL})


def test_each_published_change_is_looked_up_in_the_primary_key_not_by_scanning_the_history(container):
    if container.engine.dialect.name != "postgresql":
        pytest.skip("the one-statement publish is PostgreSQL's")
    with container.engine.begin() as connection:  # a history that is not empty, as in production
        connection.execute(
            text(
                "INSERT INTO effective_access_changes (customer_id, lookup_key, change, granted, reason, sources,"
                " cause, changed_at) SELECT 'cus_old', 'api_access', 'granted', true, 'stripe', '[]', 'evt_old', now()"
                " FROM generate_series(1, 2000)"
            )
        )
    plan = plan_of_a_publish(container)

    assert "Seq Scan on effective_access_changes" not in plan
    assert "using pk_effective_access_changes on effective_access_changes" in plan
