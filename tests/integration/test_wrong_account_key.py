"""A 404 for a customer is not "has nothing": only a customer Stripe reports deleted loses their rows. A key of
another account (or mode) fails the event with a reason a person can act on, and revokes nobody."""

from dataclasses import replace

import pytest
from sqlalchemy import func, select

from entitlement_sync.bootstrap import bootstrap
from entitlement_sync.models import AccessChange, EventStatus
from entitlement_sync.testing import event, subscription, summary_event
from tests.conftest import post_webhook, stored_event

OTHER_KEY = "sk_test_key_of_another_account"
API = ("feat_api", "api_access")


@pytest.fixture
def wrong_key(container, fake_stripe):
    """The same service and database, deployed with the key of another account than its customers'."""
    fake_stripe.add_key_of_another_account(OTHER_KEY)
    wrong = bootstrap(replace(container.settings, stripe_api_key=OTHER_KEY), broker=container.broker)
    yield wrong
    wrong.close()


def granted(container, fake_stripe, customers):
    """Rows synced with the right key, as they were before someone deployed the wrong one."""
    for customer in customers:
        fake_stripe.set_entitlements(customer, [API])
        container.syncer.sync_customer(customer)
        assert container.reader.has_access(customer, "api_access")


def revocations(container):
    with container.new_session() as session:
        return session.scalar(select(func.count()).where(AccessChange.change == "revoked"))


def test_events_fail_at_once_naming_the_key_and_no_row_is_revoked(client, container, wrong_key, fake_stripe):
    customers = ["cus_1", "cus_2", "cus_3"]
    granted(container, fake_stripe, customers)
    payloads = [summary_event(customer, []) for customer in customers]
    payloads.append(event("customer.subscription.deleted", subscription("sub_1", "cus_1", status="canceled")))
    for payload in payloads:
        post_webhook(client, payload)
        # Not retried: no later attempt fixes a key, and `failed` is what alerts a person.
        outcome = wrong_key.syncer.process_event(payload["id"], final_attempt=False)
        assert outcome.status == EventStatus.FAILED

    for payload in payloads:
        stored = stored_event(container, payload["id"])
        assert (stored.status, stored.attempts) == (EventStatus.FAILED, 1)
        assert "STRIPE_API_KEY" in stored.last_error and "another account or mode" in stored.last_error
        assert "account/mode mismatch" in stored.last_error
    assert all(container.reader.has_access(customer, "api_access") for customer in customers)
    assert revocations(container) == 0


def test_a_customer_stripe_reports_deleted_loses_their_rows(client, container, fake_stripe):
    granted(container, fake_stripe, ["cus_1"])
    fake_stripe.delete_customer("cus_1")
    payload = summary_event("cus_1", [])
    post_webhook(client, payload)
    assert container.syncer.process_event(payload["id"]).status == EventStatus.PROCESSED
    assert not container.reader.has_access("cus_1", "api_access")
    assert revocations(container) == 1
    # The entitlements answered 404; the customer was looked up and found `deleted: true`.
    assert [call.path for call in fake_stripe.calls[-2:]] == [
        "/v1/entitlements/active_entitlements",
        "/v1/customers/cus_1",
    ]


def test_sync_customer_with_the_wrong_key_revokes_nothing_and_exits_1(cli, container, wrong_key, fake_stripe):
    from tests.integration.conftest import Cli

    granted(container, fake_stripe, ["cus_1"])
    report = Cli(wrong_key).json("sync", "customer", "cus_1", exit_code=1)
    assert (report["errors"], report["revoked"]) == (1, 0)
    assert "another account or mode" in report["changes"][0]["error"]
    assert container.reader.has_access("cus_1", "api_access")
