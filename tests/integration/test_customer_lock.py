"""The customer's lock is taken once per transaction, however many writers in it ask, and again in the next."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import text

from entitlement_sync import store
from entitlement_sync.bootstrap import Container
from entitlement_sync.db import transaction
from tests.conftest import TEST_DATABASE_URL

pytestmark = pytest.mark.skipif(not TEST_DATABASE_URL, reason="PostgreSQL's advisory locks")

HELD = text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()")


def test_the_lock_is_asked_once_per_transaction_and_held_in_each(
    container: Container, driver_statements: list[str]
) -> None:
    for _ in range(2):
        with transaction(container.new_session) as session:
            store.locks.lock_customer(session, "cus_1")
            store.locks.lock_customer(session, "cus_1")
            store.locks.lock_customer(session, "cus_2")
            assert session.scalar(HELD) == 2
    asked = [statement for statement in driver_statements if "pg_advisory_xact_lock" in statement]
    assert len(asked) == 4  # cus_1 and cus_2, in each of the two transactions


def test_a_read_sent_with_the_lock_sees_what_the_holder_committed_while_it_waited(container: Container) -> None:
    """The lock and the read after it travel in one round trip, yet the read's snapshot is taken once the lock
    is granted: a write committed by the lock's holder meanwhile is seen."""
    with transaction(container.new_session) as session:
        store.sync_state.advance_customer_seq(session, "cus_1")
    holder = container.new_session()
    holder.begin()
    store.locks.lock_customer(holder, "cus_1")
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(_seq_read_with_the_lock, container, "cus_1")
        time.sleep(0.3)  # let the reader reach the lock and wait on it
        assert not waiting.done()
        store.sync_state.advance_customer_seq(holder, "cus_1")
        holder.commit()
        holder.close()
        assert waiting.result(timeout=10) == 2  # the holder's bump (2), seen by the read sent with the lock


def _seq_read_with_the_lock(container: Container, customer_id: str) -> int:
    read = ("SELECT seq FROM customer_sync_state WHERE customer_id = %(customer)s", {"customer": customer_id})
    with transaction(container.new_session) as session:
        ((seq,),) = store.locks.lock_customer(session, customer_id, then=read)
    return int(seq)


def test_a_lock_taken_in_a_rolled_back_savepoint_is_taken_again(container: Container) -> None:
    with transaction(container.new_session) as session:
        savepoint = session.begin_nested()
        store.locks.lock_customer(session, "cus_1")
        savepoint.rollback()
        assert session.scalar(HELD) == 0  # released with the savepoint
        store.locks.lock_customer(session, "cus_1")
        assert session.scalar(HELD) == 1
