"""The receiver's one statement (store.inbox_batch) looks up each id of its batch in the primary key, whatever
plan the server caches for it: a scan of the whole inbox per batch grows with every event ever stored."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import text

from entitlement_sync.events import parse_event
from entitlement_sync.models import EventStatus, utcnow
from entitlement_sync.store import inbox_batch
from entitlement_sync.testing import active_entitlement, summary_event

from .plans import generic_plan


def plan_of_a_batch(container: Any, customers: list[str]) -> str:
    rows = [
        inbox_batch.EventToStore(
            parse_event(json.dumps(summary_event(customer, [active_entitlement("feat_api", "api_access")])).encode()),
            EventStatus.QUEUED,
            None,
            utcnow(),
            True,
        )
        for customer in customers
    ]
    document = "[" + ",".join(inbox_batch._batch_row(row) for row in rows) + "]"
    return generic_plan(container, inbox_batch._STORE_BATCH, {"batch": document})


def test_each_id_of_a_batch_is_looked_up_in_the_primary_key_not_by_scanning_the_inbox(container):
    if container.engine.dialect.name != "postgresql":
        pytest.skip("the one-statement batch is PostgreSQL's")
    with container.engine.begin() as connection:  # an inbox that is not empty, as in production
        connection.execute(
            text(
                "INSERT INTO stripe_events (id, type, customer_id, livemode, created, payload, status, attempts,"
                " received_at, status_changed_at, waits) SELECT 'evt_old_' || n, 'x', 'cus_old', false, 1, '{}',"
                " 'processed', 0, now(), now(), 0 FROM generate_series(1, 2000) AS n"
            )
        )
    plan = plan_of_a_batch(container, ["cus_1", "cus_2", "cus_3"])

    assert "Seq Scan on stripe_events" not in plan
    assert "using pk_stripe_events on stripe_events" in plan
