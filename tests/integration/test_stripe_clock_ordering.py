"""Complete summary payloads are written at once when provably newer by Stripe's clock, and an older state never
wins: adversarial orders through the real Syncer, with the simulated Stripe stamping `Date` on its own clock."""

from __future__ import annotations

import pytest
from sqlalchemy import event as sa_event

from entitlement_sync.events import event_from_payload
from entitlement_sync.models import EventStatus
from entitlement_sync.testing import active_entitlement, event, subscription, summary_event
from tests.conftest import TEST_DATABASE_URL, stored_event
from tests.fakes import entitlement_calls_per_customer, summary_signal

T = 1_800_000_000  # Stripe's clock in these tests: whole seconds, moved by hand
API = ("feat_api", "api_access")
AI = ("feat_ai", "ai_assistant")


@pytest.fixture
def stripe_clock(fake_stripe):
    moment = {"now": float(T)}
    fake_stripe.clock = lambda: moment["now"]
    return moment


def summary(customer, features, created, **fields):
    items = [active_entitlement(feature, key, entitlement_id=f"ent_{customer}_{feature}") for feature, key in features]
    return summary_event(customer, items, created=created, **fields)


def deliver(container, payload):
    container.receiver.accept_event(event_from_payload(payload))
    return container.syncer.process_event(payload["id"])


def keys(container, customer="cus_1"):
    return sorted(key for key in ("api_access", "ai_assistant") if container.reader.has_access(customer, key))


def calls(fake_stripe, customer="cus_1"):
    return entitlement_calls_per_customer(fake_stripe)[customer]


def test_a_complete_payload_for_a_customer_never_synced_is_written_without_a_call(container, fake_stripe):
    outcome = deliver(container, summary("cus_1", [API], T))
    assert outcome.status == EventStatus.PROCESSED and outcome.sync.from_payload
    assert keys(container) == ["api_access"]
    assert calls(fake_stripe) == 0


def test_an_incomplete_payload_is_fetched(container, fake_stripe, stripe_clock):
    fake_stripe.set_entitlements("cus_1", [API, AI])
    deliver(container, summary_signal("cus_1", [], created=T))
    assert keys(container) == ["ai_assistant", "api_access"]
    assert calls(fake_stripe) == 1


def test_an_older_complete_payload_after_a_newer_payload_is_covered(container, fake_stripe):
    deliver(container, summary("cus_1", [API, AI], T + 5))
    outcome = deliver(container, summary("cus_1", [API], T + 1))
    assert outcome.status == EventStatus.PROCESSED and not outcome.sync.applied
    assert keys(container) == ["ai_assistant", "api_access"]
    assert calls(fake_stripe) == 0


def test_an_older_complete_payload_after_a_newer_fetch_is_covered(container, fake_stripe, stripe_clock):
    fake_stripe.set_entitlements("cus_1", [API, AI])
    stripe_clock["now"] = T + 10
    deliver(container, summary_signal("cus_1", [], created=T + 10))  # fetched: Date T + 10
    outcome = deliver(container, summary("cus_1", [], T + 3))  # Stripe's change of T + 3, delivered late
    assert outcome.status == EventStatus.PROCESSED and not outcome.sync.applied
    assert keys(container) == ["ai_assistant", "api_access"]
    assert calls(fake_stripe) == 1


def test_two_payloads_in_one_second_are_in_doubt_and_the_second_is_fetched(container, fake_stripe, stripe_clock):
    fake_stripe.set_entitlements("cus_1", [AI])  # Stripe's truth after both changes of second T
    stripe_clock["now"] = T + 1
    deliver(container, summary("cus_1", [AI], T))
    deliver(container, summary("cus_1", [API], T))  # delivered second, but which came first? only Stripe knows
    assert keys(container) == ["ai_assistant"]
    assert calls(fake_stripe) == 1


def test_a_payload_whose_created_equals_the_date_of_the_fetch_is_fetched(container, fake_stripe, stripe_clock):
    fake_stripe.set_entitlements("cus_1", [API])
    deliver(container, summary_signal("cus_1", [], created=T))  # fetched: Date T
    fake_stripe.set_entitlements("cus_1", [AI])
    deliver(container, summary("cus_1", [AI], T))
    assert keys(container) == ["ai_assistant"]
    assert calls(fake_stripe) == 2


def test_a_payload_well_after_the_fetch_is_written_without_a_call(container, fake_stripe, stripe_clock):
    fake_stripe.set_entitlements("cus_1", [API])
    deliver(container, summary_signal("cus_1", [], created=T))  # fetched: Date T, read within a round trip
    outcome = deliver(container, summary("cus_1", [AI], T + 2))
    assert outcome.sync.from_payload and keys(container) == ["ai_assistant"]
    assert calls(fake_stripe) == 1


def test_a_fetch_in_flight_while_a_newer_payload_lands_does_not_overwrite_it(container, fake_stripe, stripe_clock):
    """The fetch reads Stripe at T (the old state), then a payload of T + 5 lands before the fetch is applied:
    the fetch is older by Stripe's clock and is dropped; its event is covered by the newer payload."""
    fake_stripe.set_entitlements("cus_1", [API])
    newer = summary("cus_1", [API, AI], T + 5)

    def payload_lands_mid_fetch(method, path, query):
        if path.endswith("active_entitlements") and stored_event(container, newer["id"]) is None:
            fake_stripe.remove_request_hook(payload_lands_mid_fetch)
            deliver(container, newer)

    fake_stripe.add_request_hook(payload_lands_mid_fetch)
    outcome = deliver(container, summary_signal("cus_1", [], created=T - 1))
    assert outcome.status == EventStatus.PROCESSED
    assert stored_event(container, newer["id"]).status == EventStatus.PROCESSED
    assert keys(container) == ["ai_assistant", "api_access"]
    assert calls(fake_stripe) == 1


def test_a_fetch_in_doubt_with_a_payload_that_landed_meanwhile_is_taken_again(container, fake_stripe, stripe_clock):
    """Same race, but the payload shares the fetch's second: neither is provably newer, so the event fetches
    again, and the table ends with Stripe's truth."""
    fake_stripe.set_entitlements("cus_1", [API])
    racing = summary("cus_1", [AI], T)

    def payload_lands_mid_fetch(method, path, query):
        if path.endswith("active_entitlements") and stored_event(container, racing["id"]) is None:
            deliver(container, racing)
            fake_stripe.set_entitlements("cus_1", [API, AI])  # Stripe moves on within the same second

    fake_stripe.add_request_hook(payload_lands_mid_fetch)
    deliver(container, summary_signal("cus_1", [], created=T))  # of second T too: the payload does not cover it
    assert keys(container) == ["ai_assistant", "api_access"]
    assert calls(fake_stripe) == 2


def test_a_subscription_event_after_a_newer_state_needs_no_call(container, fake_stripe):
    deliver(container, summary("cus_1", [API], T + 5))
    sub = subscription("sub_1", "cus_1", prices=[("price_1", "prod_1")])
    outcome = deliver(container, event("customer.subscription.updated", sub, created=T + 2, previous_attributes={}))
    assert outcome.status == EventStatus.PROCESSED
    assert calls(fake_stripe) == 0


def test_a_subscription_event_as_new_as_the_state_held_is_fetched(container, fake_stripe, stripe_clock):
    fake_stripe.set_entitlements("cus_1", [AI])
    deliver(container, summary("cus_1", [API], T + 5))
    sub = subscription("sub_1", "cus_1", prices=[("price_1", "prod_1")])
    stripe_clock["now"] = T + 6
    deliver(container, event("customer.subscription.updated", sub, created=T + 5, previous_attributes={}))
    assert keys(container) == ["ai_assistant"]
    assert calls(fake_stripe) == 1


def _stored_first_event(container, fake_stripe, path: str) -> str:
    """The customer's first event of each path (a complete payload, a bare signal, a subscription), stored."""
    fake_stripe.set_entitlements("cus_1", [API])
    sub = subscription("sub_1", "cus_1", prices=[("price_1", "prod_1")])
    payload = {
        "payload": summary("cus_1", [API], T),
        "fetch": summary_signal("cus_1", [], created=T),
        "subscription": event("customer.subscription.created", sub, created=T),
    }[path]
    container.receiver.accept_event(event_from_payload(payload))
    return payload["id"]


@pytest.mark.skipif(not TEST_DATABASE_URL, reason="counts PostgreSQL commits")
@pytest.mark.parametrize("path", ["payload", "fetch", "subscription"])
def test_a_processed_event_takes_at_most_two_commits(container, fake_stripe, stripe_clock, path):
    event_id = _stored_first_event(container, fake_stripe, path)
    commits: list[object] = []

    def counted(connection):
        commits.append(connection)

    sa_event.listen(container.engine, "commit", counted)
    try:
        outcome = container.syncer.process_event(event_id)
    finally:
        sa_event.remove(container.engine, "commit", counted)
    assert outcome.status == EventStatus.PROCESSED
    assert len(commits) <= (1 if path == "payload" else 2)


@pytest.mark.skipif(not TEST_DATABASE_URL, reason="counts PostgreSQL statements")
@pytest.mark.parametrize(("path", "most"), [("payload", 4), ("fetch", 6), ("subscription", 9)])
def test_a_processed_event_takes_few_statements(container, fake_stripe, stripe_clock, path, most, driver_statements):
    """The worker's statements on PostgreSQL, the customer's first event (grants, history, feed): the claim
    reads what is held, and each write or read of the apply is one statement (docs/design.md, Cost)."""
    event_id = _stored_first_event(container, fake_stripe, path)
    outcome = container.syncer.process_event(event_id)
    assert outcome.status == EventStatus.PROCESSED
    assert keys(container) == ["api_access"]
    # Counted at the driver: the worker sends its statements through psycopg itself.
    assert len(driver_statements) <= most, "\n".join(driver_statements)


@pytest.mark.skipif(not TEST_DATABASE_URL, reason="counts PostgreSQL round trips")
@pytest.mark.parametrize(("path", "most"), [("payload", 2), ("fetch", 4), ("subscription", 5)])
def test_a_processed_event_takes_few_round_trips(container, fake_stripe, stripe_clock, path, most, driver_round_trips):
    """As the worker runs it (the job names the customer): the BEGIN goes with the first statements and the COMMIT
    with the last, so a complete payload takes two round trips to PostgreSQL (the claim, then the write with the
    finish), and a fetch four (the claim, the ticket, then the read and the write of the apply). A subscription
    event adds one: its mirror's SAVEPOINT, write and policy read (its savepoint is never released)."""
    event_id = _stored_first_event(container, fake_stripe, path)
    outcome = container.syncer.process_event(event_id, customer_id="cus_1")
    assert outcome.status == EventStatus.PROCESSED
    assert keys(container) == ["api_access"]
    trips = driver_round_trips()
    assert len(trips) <= most, "\n".join(trips)
    assert trips[0].startswith("BEGIN | SELECT pg_advisory_xact_lock")
    assert trips[-1].endswith(" | COMMIT"), "\n".join(trips)
