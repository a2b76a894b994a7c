"""`events replay --failed` with 100,000 failed events: batched reads, updates and enqueues, and `--limit`.

The full 100,000 run against real PostgreSQL (CI's second pass); the embedded pass keeps the same batches
(1,000 a time) over 5,000 events, so that a newcomer's plain `pytest` stays quick."""

import time

from sqlalchemy import func, insert, select

from entitlement_sync.models import EventStatus, StripeEvent, utcnow
from entitlement_sync.testing import summary_event
from tests.conftest import TEST_DATABASE_URL

COUNT = 100_000 if TEST_DATABASE_URL else 5_000


def store_failed_events(container, count):
    now = utcnow()
    payload = summary_event("cus_1", [])  # one payload for all: this test is about counts, not content
    rows = [
        {
            "id": f"evt_failed_{n:06d}",
            "type": payload["type"],
            "customer_id": f"cus_{n % 5000:04d}",
            "livemode": False,
            "created": payload["created"],
            "payload": payload,
            "status": EventStatus.FAILED,
            "customer_seq": 1,
            "attempts": 9,
            "last_error": "AuthenticationError: HTTP 401",
            "received_at": now,
            "status_changed_at": now,
        }
        for n in range(count)
    ]
    with container.engine.begin() as connection:
        for start in range(0, count, 10_000):
            connection.execute(insert(StripeEvent), rows[start : start + 10_000])


def statuses(container):
    with container.new_session() as session:
        rows = session.execute(select(StripeEvent.status, func.count()).group_by(StripeEvent.status))
        return dict(rows.all())


def test_replay_failed_takes_every_failed_event_in_batches_and_honours_limit(cli, container, capsys):
    store_failed_events(container, COUNT)

    dry = cli.json("events", "replay", "--failed", "--dry-run")
    assert dry["queued"] == COUNT and statuses(container) == {EventStatus.FAILED: COUNT}

    first = cli.json("events", "replay", "--failed", "--limit", "2500")
    assert (first["queued"], first["event_ids"][0], first["event_ids"][-1]) == (
        2500,
        "evt_failed_000000",
        "evt_failed_002499",
    )
    assert statuses(container) == {EventStatus.FAILED: COUNT - 2500, EventStatus.QUEUED: 2500}

    started = time.monotonic()
    rest = cli.json("events", "replay", "--failed")
    elapsed = time.monotonic() - started
    assert (rest["queued"], rest["pending"], rest["skipped"]) == (COUNT - 2500, [], {})
    assert statuses(container) == {EventStatus.QUEUED: COUNT}
    with capsys.disabled():  # a figure for docs/reliability.md, never an assertion
        print(f"\nreplay --failed of {COUNT - 2500} events: {elapsed:.1f} s")
