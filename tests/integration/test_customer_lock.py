"""The customer's lock is taken once per transaction, however many writers in it ask, and again in the next."""

from __future__ import annotations

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import text

from entitlement_sync import store
from entitlement_sync.bootstrap import Container
from entitlement_sync.db import transaction
from tests.conftest import TEST_DATABASE_URL

pytestmark = pytest.mark.skipif(not TEST_DATABASE_URL, reason="PostgreSQL's advisory locks")

HELD = text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()")


def test_the_lock_is_asked_once_per_transaction_and_held_in_each(container: Container) -> None:
    asked: list[str] = []

    def counted(connection, cursor, statement, *args):
        if "pg_advisory_xact_lock" in statement:
            asked.append(statement)

    sa_event.listen(container.engine, "before_cursor_execute", counted)
    try:
        for _ in range(2):
            with transaction(container.new_session) as session:
                store.effective.lock_customer(session, "cus_1")
                store.effective.lock_customer(session, "cus_1")
                store.effective.lock_customer(session, "cus_2")
                assert session.scalar(HELD) == 2
    finally:
        sa_event.remove(container.engine, "before_cursor_execute", counted)
    assert len(asked) == 4  # cus_1 and cus_2, in each of the two transactions


def test_a_lock_taken_in_a_rolled_back_savepoint_is_taken_again(container: Container) -> None:
    with transaction(container.new_session) as session:
        savepoint = session.begin_nested()
        store.effective.lock_customer(session, "cus_1")
        savepoint.rollback()
        assert session.scalar(HELD) == 0  # released with the savepoint
        store.effective.lock_customer(session, "cus_1")
        assert session.scalar(HELD) == 1
