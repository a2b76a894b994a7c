"""The worker's BEGIN goes with its first statements and its COMMIT with its last (`db.driver_rows_together`,
`_sql.pg_rows(last=True)`): a transaction of two statements is two round trips. What must hold: the COMMIT is a
real one, it never goes ahead of work still to be written (the feed's numbering at commit, a SAVEPOINT's outer
transaction), nothing is sent after it, and a connection returned to the pool begins its transactions as psycopg
does again (else a later transaction's statements would each commit on their own)."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from entitlement_sync.db import transaction
from entitlement_sync.store._sql import PENDING_AT_COMMIT, CommittedAlready, pg_rows
from tests.conftest import TEST_DATABASE_URL

pytestmark = pytest.mark.skipif(not TEST_DATABASE_URL, reason="the driver path is PostgreSQL's")

MARK = "INSERT INTO customer_sync_state (customer_id, seq, applied_seq, state_seq) VALUES (%(customer)s, 7, 0, 0)"


def marked(container, customer: str) -> bool:
    with container.engine.connect() as connection:  # another connection: sees only what was committed
        found = connection.execute(text("SELECT 1 FROM customer_sync_state WHERE customer_id = :c"), {"c": customer})
        return found.first() is not None


def test_the_commit_sent_with_the_last_statement_commits_it_in_one_round_trip(container, driver_round_trips):
    with transaction(container.new_session) as session:
        pg_rows(session, MARK, {"customer": "cus_alone"}, last=True)
        assert marked(container, "cus_alone")  # committed before the session's own commit, which sends nothing

    trips = driver_round_trips()
    assert trips[0].startswith("BEGIN | INSERT INTO customer_sync_state") and trips[0].endswith(" | COMMIT")
    assert "COMMIT" not in trips  # the session's commit sent nothing alone
    assert any(trip.startswith("SELECT 1 FROM customer_sync_state") for trip in trips)  # the reads are traced too


def test_a_statement_after_the_commit_is_refused(container):
    with pytest.raises(CommittedAlready), transaction(container.new_session) as session:
        pg_rows(session, MARK, {"customer": "cus_after"}, last=True)
        pg_rows(session, "SELECT 1", None)
    assert marked(container, "cus_after")  # what was committed stays so


def test_work_pending_at_commit_keeps_the_commit_for_the_session(container, driver_round_trips):
    with pytest.raises(RuntimeError), transaction(container.new_session) as session:
        session.info[PENDING_AT_COMMIT] = ["a change the feed would number at commit"]
        pg_rows(session, MARK, {"customer": "cus_pending"}, last=True)
        session.info.pop(PENDING_AT_COMMIT)
        raise RuntimeError("rolled back: the statement was not committed with itself")
    assert not marked(container, "cus_pending")
    assert not any(trip.endswith("COMMIT") for trip in driver_round_trips())


def test_a_statement_in_a_savepoint_never_commits_the_outer_transaction(container):
    with pytest.raises(RuntimeError), transaction(container.new_session) as session:
        session.execute(text("SELECT 1"))
        with session.begin_nested():
            pg_rows(session, MARK, {"customer": "cus_nested"}, last=True)
        raise RuntimeError("rolled back")
    assert not marked(container, "cus_nested")


def test_a_transaction_begun_with_the_statements_rolls_back_whole(container):
    with pytest.raises(RuntimeError), transaction(container.new_session) as session:
        pg_rows(session, MARK, {"customer": "cus_first"})  # BEGIN sent with it
        session.execute(text(MARK.replace("%(customer)s", ":customer")), {"customer": "cus_second"})
        raise RuntimeError("rolled back")
    assert not marked(container, "cus_first")
    assert not marked(container, "cus_second")


def test_a_pooled_connection_begins_its_next_transactions_as_psycopg_does(container):
    with transaction(container.new_session) as session:
        pg_rows(session, "SELECT 1", None)  # begins the transaction itself
    for _ in range(container.engine.pool.size() + 1):  # whichever pooled connection comes next
        with pytest.raises(RuntimeError), transaction(container.new_session) as session:
            session.execute(text(MARK.replace("%(customer)s", ":customer")), {"customer": "cus_plain"})
            session.execute(text("SELECT 1"))
            raise RuntimeError("rolled back")
        assert not marked(container, "cus_plain")
