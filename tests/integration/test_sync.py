"""Syncing a customer from Stripe into the access table: correct under any order, duplication and concurrency."""

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import select

from entitlement_sync import store
from entitlement_sync.bootstrap import bootstrap
from entitlement_sync.db import transaction
from entitlement_sync.errors import StorageUnavailable
from entitlement_sync.events import event_from_payload, subscription_snapshot
from entitlement_sync.models import AccessChange, EventStatus, Subscription, utcnow
from entitlement_sync.ports import ActiveEntitlement, StuckRule
from entitlement_sync.sweep import Sweeper
from entitlement_sync.sync import Syncer
from entitlement_sync.testing import active_entitlement, event, subscription
from tests.conftest import post_webhook, settle, stored_event
from tests.fakes import ACTIVE_ENTITLEMENTS, GatedSource, busiest_second, entitlement_calls_per_customer
from tests.fakes import summary_signal as summary_event  # these tests are of the fetch path


def rows(container, customer):
    return {(item.feature, item.lookup_key) for item in container.reader.entitlements_for(customer).entitlements}


def history(container, customer):
    with container.new_session() as session:
        changes = session.scalars(
            select(AccessChange).where(AccessChange.customer_id == customer).order_by(AccessChange.id)
        )
        return [(change.change, change.lookup_key, change.event_id) for change in changes]


def test_a_summary_event_syncs_the_customers_entitlements_from_the_api(client, container, worker, fake_stripe):
    fake_stripe.set_entitlements("cus_1", [("feat_api", "api_access"), ("feat_ai", "ai_assistant")])
    event_payload = summary_event("cus_1", [active_entitlement("feat_api", "api_access")])
    post_webhook(client, event_payload)
    settle(container)
    # The API, not the payload, is the truth: the payload was already stale.
    assert rows(container, "cus_1") == {("feat_api", "api_access"), ("feat_ai", "ai_assistant")}
    assert container.reader.has_access("cus_1", "ai_assistant")
    assert not container.reader.has_access("cus_1", "sso")
    assert sorted(history(container, "cus_1")) == [
        ("granted", "ai_assistant", event_payload["id"]),
        ("granted", "api_access", event_payload["id"]),
    ]


def test_more_entitlements_than_one_page_are_all_fetched(client, container, worker, fake_stripe):
    features = [(f"feat_{n:03d}", f"feature_{n:03d}") for n in range(150)]
    fake_stripe.set_entitlements("cus_big", features)
    payload = summary_event("cus_big", [active_entitlement(f, k) for f, k in features])
    assert payload["data"]["object"]["entitlements"]["has_more"] is True
    post_webhook(client, payload)
    settle(container)
    assert rows(container, "cus_big") == set(features)
    calls = fake_stripe.calls_to(ACTIVE_ENTITLEMENTS)
    assert [call.query["limit"] for call in calls] == [["100"], ["100"]]
    assert calls[1].query["starting_after"] == [fake_stripe.active_entitlements("cus_big")[99]["id"]]


def test_two_features_sharing_a_lookup_key_are_both_kept(client, container, worker, fake_stripe):
    # The archived feat_old still grants; feat_new reused its lookup key.
    fake_stripe.set_entitlements("cus_1", [("feat_old", "api_access"), ("feat_new", "api_access")])
    post_webhook(client, summary_event("cus_1", []))
    settle(container)
    assert rows(container, "cus_1") == {("feat_old", "api_access"), ("feat_new", "api_access")}
    fake_stripe.set_entitlements("cus_1", [("feat_new", "api_access")])
    post_webhook(client, summary_event("cus_1", []))
    settle(container)
    assert rows(container, "cus_1") == {("feat_new", "api_access")}
    assert container.reader.has_access("cus_1", "api_access")


def test_a_customer_can_lose_every_entitlement(client, container, worker, fake_stripe):
    fake_stripe.set_entitlements("cus_1", [("feat_api", "api_access")])
    post_webhook(client, summary_event("cus_1", []))
    settle(container)
    fake_stripe.set_entitlements("cus_1", [])
    last = summary_event("cus_1", [])
    post_webhook(client, last)
    settle(container)
    assert rows(container, "cus_1") == set()
    assert history(container, "cus_1")[-1] == ("revoked", "api_access", last["id"])
    assert container.reader.entitlements_for("cus_1").synced_at is not None


def test_a_deleted_customer_loses_every_entitlement(client, container, worker, fake_stripe):
    fake_stripe.set_entitlements("cus_1", [("feat_api", "api_access")])
    post_webhook(client, summary_event("cus_1", []))
    settle(container)
    fake_stripe.delete_customer("cus_1")
    deleted = event("customer.subscription.deleted", subscription("sub_1", "cus_1", status="canceled"))
    post_webhook(client, deleted)
    settle(container)
    assert rows(container, "cus_1") == set()
    assert stored_event(container, deleted["id"]).status == EventStatus.PROCESSED


def test_events_delivered_in_reverse_order_converge_to_stripes_state(client, container, worker, fake_stripe):
    fake_stripe.set_entitlements("cus_1", [("feat_pro", "pro_reports")])
    newer = summary_event("cus_1", [active_entitlement("feat_pro", "pro_reports")], created=2_000)
    older = summary_event("cus_1", [active_entitlement("feat_basic", "basic_reports")], created=1_000)
    post_webhook(client, newer)
    post_webhook(client, older)
    settle(container)
    assert rows(container, "cus_1") == {("feat_pro", "pro_reports")}


def test_a_burst_of_events_for_one_customer_costs_one_call_to_stripe(client, container, fake_stripe):
    fake_stripe.set_entitlements("cus_1", [("feat_api", "api_access")])
    burst = [summary_event("cus_1", []) for _ in range(5)]
    for payload in burst:
        post_webhook(client, payload)
    for payload in burst:  # all stored before any is processed: the first fetch covers them all
        container.syncer.process_event(payload["id"])
    assert len(fake_stripe.calls_to(ACTIVE_ENTITLEMENTS)) == 1
    assert {stored_event(container, p["id"]).status for p in burst} == {EventStatus.PROCESSED}


def test_an_older_fetch_that_finishes_last_never_overwrites_a_newer_one(container):
    source = GatedSource()
    syncer = Syncer(container.new_session, source, clock=container.syncer._clock)
    old_answer = [ActiveEntitlement("ent_basic", "feat_basic", "basic")]
    new_answer = [ActiveEntitlement("ent_pro", "feat_pro", "pro")]
    older_started, older_gate = source.will_answer(old_answer)
    results = {}
    older = threading.Thread(target=lambda: results.setdefault("older", syncer.sync_customer("cus_1")))
    older.start()
    assert older_started.wait(5)
    _, newer_gate = source.will_answer(new_answer)
    newer_gate.set()
    results["newer"] = syncer.sync_customer("cus_1")
    older_gate.set()
    older.join(5)
    assert results["newer"].applied and not results["older"].applied
    assert rows(container, "cus_1") == {("feat_pro", "pro")}


def test_429_and_500_are_retried_until_stripe_answers(client, container, worker, fake_stripe):
    fake_stripe.set_entitlements("cus_1", [("feat_api", "api_access")])
    fake_stripe.fail_next(429, headers={"Stripe-Rate-Limited-Reason": "global-rate"})
    fake_stripe.fail_next(500)
    payload = summary_event("cus_1", [])
    post_webhook(client, payload)
    settle(container)
    stored = stored_event(container, payload["id"])
    assert (stored.status, stored.attempts, stored.last_error) == (EventStatus.PROCESSED, 3, None)
    assert [call.status for call in fake_stripe.calls_to(ACTIVE_ENTITLEMENTS)] == [429, 500, 200]
    assert rows(container, "cus_1") == {("feat_api", "api_access")}


def test_a_permanent_failure_is_kept_on_the_row_without_retrying(client, container, worker, fake_stripe):
    fake_stripe.fail_next(401)
    payload = summary_event("cus_1", [])
    post_webhook(client, payload)
    settle(container)
    stored = stored_event(container, payload["id"])
    assert (stored.status, stored.attempts) == (EventStatus.FAILED, 1)
    assert "AuthenticationError: HTTP 401" in stored.last_error


def test_an_event_still_unavailable_after_the_last_retry_waits_for_the_sweep_not_failed(
    client, container, worker, fake_stripe
):
    retries = container.settings.max_retries
    fake_stripe.fail_next(503, times=retries + 1)
    payload = summary_event("cus_1", [])
    post_webhook(client, payload)
    settle(container)
    stored = stored_event(container, payload["id"])
    assert (stored.status, stored.attempts, stored.waits) == (EventStatus.WAITING, retries + 1, 1)
    assert "HTTP 503" in stored.last_error
    pause = timedelta(seconds=container.settings.sweep_interval_seconds)
    assert stored.retry_at - stored.status_changed_at == pause


def test_subscription_events_keep_a_mirror_where_an_older_event_never_wins(client, container, worker, fake_stripe):
    newer = event(
        "customer.subscription.updated",
        subscription(
            "sub_1",
            "cus_1",
            status="past_due",
            prices=[("price_pro", "prod_pro")],
            current_period_end=1_900_000_000,
        ),
        created=2_000,
    )
    older = event(
        "customer.subscription.created",
        subscription("sub_1", "cus_1", status="active", prices=[("price_basic", "prod_basic")]),
        created=1_000,
    )
    post_webhook(client, newer)
    post_webhook(client, older)
    settle(container)
    with container.new_session() as session:
        mirror = session.get(Subscription, "sub_1")
        assert (mirror.status, mirror.price_ids, mirror.product_ids, mirror.event_id) == (
            "past_due",
            ["price_pro"],
            ["prod_pro"],
            newer["id"],
        )
        assert mirror.current_period_end.timestamp() == 1_900_000_000


def test_a_canceled_subscription_is_not_revived_by_an_update_from_the_same_second(container):
    canceled = event("customer.subscription.deleted", subscription("sub_1", "cus_1", status="canceled"), created=5)
    updated = event("customer.subscription.updated", subscription("sub_1", "cus_1", status="active"), created=5)
    with transaction(container.new_session) as session:
        for payload in (canceled, updated):
            parsed = event_from_payload(payload)
            store.subscriptions.upsert_subscription(
                session, subscription_snapshot(parsed.data_object, "cus_1"), 5, parsed.id, utcnow()
            )
    with container.new_session() as session:
        assert session.get(Subscription, "sub_1").status == "canceled"


def test_a_worker_that_died_mid_job_leaves_an_event_the_sweep_picks_up(client, container, worker, fake_stripe):
    fake_stripe.set_entitlements("cus_1", [("feat_api", "api_access")])
    payload = summary_event("cus_1", [])
    container.receiver.accept_event(event_from_payload(payload))
    settle(container)
    # Simulate the crash: the row says processing, and nobody holds the job.
    with transaction(container.new_session) as session:
        store.inbox.set_status(session, payload["id"], EventStatus.PROCESSING, utcnow() - timedelta(hours=1))
    sweeper = Sweeper(
        container.new_session,
        container.queue,
        utcnow,
        StuckRule(received_grace=timedelta(seconds=10), stuck_after=timedelta(minutes=15)),
    )
    assert sweeper.requeue_unfinished() == 1
    settle(container)
    stored = stored_event(container, payload["id"])
    assert (stored.status, stored.attempts) == (EventStatus.PROCESSED, 2)


def test_an_event_of_an_unhandled_type_put_back_in_the_queue_is_ignored_not_synced(container, fake_stripe):
    payload = event("invoice.paid", {"id": "in_1", "object": "invoice", "customer": "cus_1"})
    container.receiver.accept_event(event_from_payload(payload))
    with transaction(container.new_session) as session:  # as an operator's replay would
        store.inbox.set_status(session, payload["id"], EventStatus.QUEUED, utcnow())
    outcome = container.syncer.process_event(payload["id"])
    assert (outcome.status, outcome.error) == (EventStatus.IGNORED, "event type invoice.paid is not handled")
    assert fake_stripe.calls == []


def test_concurrent_syncs_pace_their_calls_to_stripe_below_the_configured_rate(
    container, settings, broker, fake_stripe, virtual_time, request
):
    """Eight threads, as a worker's, share one pacer. Each request is stamped on its thread's (virtual)
    timeline, so the count per second is exact: unpaced, all 50 calls would land in the same instant."""
    paced = bootstrap(
        replace(settings, redis_url="", stripe_requests_per_second=20),
        broker=broker,
        sleep=virtual_time.sleep,
        monotonic=virtual_time.now,
    )
    request.addfinalizer(paced.close)
    fake_stripe.clock = virtual_time.now
    customers = [f"cus_{n:02d}" for n in range(50)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(paced.syncer.sync_customer, customers))
    assert entitlement_calls_per_customer(fake_stripe) == {customer: 1 for customer in customers}
    assert busiest_second(call.at for call in fake_stripe.calls) <= 20


class DatabaseGoneMidAttempt:
    """An EntitlementSource whose call ends the way a sync ends when the database drops mid-attempt."""

    def read_active_entitlements(self, customer_id):
        raise StorageUnavailable("connection to server lost")


def test_a_database_outage_on_the_last_attempt_leaves_the_event_for_the_sweep_not_failed(container):
    payload = summary_event("cus_1", [])
    container.receiver.accept_event(event_from_payload(payload))
    syncer = Syncer(container.new_session, DatabaseGoneMidAttempt(), clock=utcnow)
    with pytest.raises(StorageUnavailable):
        syncer.process_event(payload["id"], final_attempt=True)
    stored = stored_event(container, payload["id"])
    assert stored.status == EventStatus.QUEUED
    assert stored.last_error == "StorageUnavailable: connection to server lost"
