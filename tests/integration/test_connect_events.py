"""Connect: an event of a connected account (`account: acct_...`) concerns that account's customer, never a
platform customer of the same id; until Connect is supported it is stored `ignored`, with the reason."""

from entitlement_sync import store
from entitlement_sync.db import transaction
from entitlement_sync.events import event_from_payload
from entitlement_sync.models import EventStatus, utcnow
from entitlement_sync.testing.shapes import stripe_object
from tests.conftest import post_webhook, stored_event


def connect_summary_event(customer="cus_1", account="acct_1Connected"):
    """Stripe's event fixture around its summary fixture, as a connected account's event arrives."""
    summary = stripe_object("entitlements_active_entitlement_summary", customer=customer, livemode=False)
    return stripe_object(
        "event",
        id="evt_connect_1",
        type=summary["object"] + ".updated",
        data={"object": summary},
        account=account,
    )


def test_a_connected_accounts_event_is_ignored_with_the_reason_and_syncs_nobody(client, container, fake_stripe):
    fake_stripe.set_entitlements("cus_1", [("feat_api", "api_access")])
    payload = connect_summary_event()
    response = post_webhook(client, payload)
    assert response.status_code == 200
    assert response.json["status"] == "ignored"
    stored = stored_event(container, payload["id"])
    assert stored.status == EventStatus.IGNORED
    assert "acct_1Connected" in stored.last_error and "Connect is not supported" in stored.last_error
    assert fake_stripe.calls == []
    assert container.reader.entitlements_for("cus_1").synced_at is None


def test_a_connected_accounts_event_stored_before_the_upgrade_is_not_applied(container, fake_stripe):
    fake_stripe.set_entitlements("cus_1", [("feat_api", "api_access")])
    inbound = event_from_payload(connect_summary_event())
    with transaction(container.new_session) as session:  # as an older version stored it: to be processed
        store.inbox.insert_event_if_new(session, inbound, EventStatus.RECEIVED, None, utcnow())
    outcome = container.syncer.process_event(inbound.id)
    assert outcome.status == EventStatus.IGNORED and "acct_1Connected" in (outcome.error or "")
    assert fake_stripe.calls == []
    assert not container.reader.has_access("cus_1", "api_access")
