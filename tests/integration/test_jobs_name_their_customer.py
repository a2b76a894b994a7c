"""An event's job names its customer (a message option), so the worker takes the customer's lock with the claim
without reading the event's row first; a job that misnames it is claimed again under the stored customer's lock,
and a job without one (sent by an older release) is looked up as before."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from entitlement_sync.models import CustomerSyncState, EventAttempt, EventStatus
from entitlement_sync.store import locks
from entitlement_sync.tasks import CUSTOMER_OPTION, PROCESS_EVENT
from tests.conftest import TEST_DATABASE_URL, TEST_REDIS_URL, stored_event
from tests.integration.consuming import consume
from tests.integration.test_stripe_clock_ordering import _stored_first_event, keys, stripe_clock  # noqa: F401  (a fixture)

pytestmark = pytest.mark.usefixtures("stripe_clock")  # Stripe's clock held still, as the ordering tests hold it

LOOKUP = "SELECT customer_id FROM stripe_events"


def attempts_of(container, event_id):
    with container.new_session() as session:
        return session.scalar(select(func.count()).select_from(EventAttempt).where(EventAttempt.event_id == event_id))


@pytest.mark.parametrize("named", ["cus_1", None])
def test_a_job_naming_its_customer_or_none_is_processed(container, fake_stripe, named):
    event_id = _stored_first_event(container, fake_stripe, "fetch")

    outcome = container.syncer.process_event(event_id, customer_id=named)

    assert outcome.status == EventStatus.PROCESSED
    assert keys(container) == ["api_access"]
    assert attempts_of(container, event_id) == 1


def test_a_job_misnaming_its_customer_is_claimed_again_under_the_stored_customer(container, fake_stripe, monkeypatch):
    event_id = _stored_first_event(container, fake_stripe, "fetch")
    locked: list[str] = []
    lock_customer = locks.lock_customer

    def recorded(session, customer_id, *args, **kwargs):
        locked.append(customer_id)
        return lock_customer(session, customer_id, *args, **kwargs)

    monkeypatch.setattr(locks, "lock_customer", recorded)

    outcome = container.syncer.process_event(event_id, customer_id="cus_someone_else")

    assert outcome.status == EventStatus.PROCESSED
    assert keys(container) == ["api_access"]
    assert keys(container, "cus_someone_else") == []
    assert locked[:2] == ["cus_someone_else", "cus_1"]
    # The claim under the wrong lock was rolled back whole: its attempt too, and (SQLite) the lock's row.
    assert attempts_of(container, event_id) == 1
    with container.new_session() as session:
        assert session.get(CustomerSyncState, "cus_someone_else") is None
    assert stored_event(container, event_id).status == EventStatus.PROCESSED


@pytest.mark.skipif(not TEST_DATABASE_URL, reason="counts PostgreSQL statements")
def test_a_job_naming_its_customer_spares_the_lookup(container, fake_stripe, driver_statements):
    event_id = _stored_first_event(container, fake_stripe, "fetch")

    container.syncer.process_event(event_id, customer_id="cus_1")

    assert keys(container) == ["api_access"]
    assert not [statement for statement in driver_statements if statement.startswith(LOOKUP)]


@pytest.mark.skipif(not TEST_REDIS_URL, reason="the batch send is Redis'")
def test_the_receivers_jobs_name_each_events_customer(container, settings):
    container.queue.enqueue_events(["evt_a", "evt_b"], {"evt_a": "cus_a", "evt_b": None})

    messages = consume(container.broker, settings.queue_name, 2)
    assert [(message.actor_name, message.args, message.options.get(CUSTOMER_OPTION)) for message in messages] == [
        (PROCESS_EVENT, ("evt_a",), "cus_a"),
        (PROCESS_EVENT, ("evt_b",), None),
    ]
