"""`entitlement-sync events …` through click's CliRunner, against the configured database and broker."""

import time
from dataclasses import replace
from datetime import timedelta

from sqlalchemy import update

from entitlement_sync.bootstrap import bootstrap
from entitlement_sync.events import HANDLED_TYPES, SUMMARY_UPDATED, event_from_payload
from entitlement_sync.models import EventStatus, StripeEvent, utcnow
from entitlement_sync.testing import active_entitlement, event, subscription
from tests.conftest import count_events, settle, stored_event
from tests.fakes import summary_signal as summary_event  # these tests are of the fetch path
from tests.integration.conftest import Cli, subscribe_customers


def accept(container, payload):
    container.receiver.accept_event(event_from_payload(payload))
    return payload["id"]


def age(container, event_id, by):
    with container.engine.begin() as connection:
        statement = update(StripeEvent).where(StripeEvent.id == event_id)
        connection.execute(statement.values(status_changed_at=utcnow() - by))


def test_events_list_filters_and_shows_stuck_events_as_the_sweep_sees_them(cli, container):
    stuck = accept(container, summary_event("cus_1", []))
    fresh = accept(container, event("customer.subscription.updated", subscription("sub_1", "cus_2")))
    age(container, stuck, by=timedelta(hours=1))

    def ids(*options):
        return [row["id"] for row in cli.json("events", "list", *options)["events"]]

    assert sorted(ids()) == sorted([stuck, fresh])
    assert ids("--status", "stuck") == [stuck]
    assert ids("--status", "queued", "--customer", "cus_2") == [fresh]
    assert ids("--type", SUMMARY_UPDATED) == [stuck]
    assert sorted(ids("--since", "1h")) == sorted([stuck, fresh])
    assert ids("--since", (utcnow() + timedelta(days=1)).isoformat()) == []
    assert len(ids("--limit", "1")) == 1
    table = cli("events", "list", "--status", "stuck")
    assert table.exit_code == 0 and stuck in table.stdout


def test_a_bad_since_or_status_is_a_usage_error(cli, container):
    assert cli("events", "list", "--since", "yesterday").exit_code == 2
    assert cli("events", "list", "--status", "lost").exit_code == 2
    assert cli("events", "replay").exit_code == 2
    assert cli("events", "replay", "evt_1", "--failed").exit_code == 2


def test_events_show_has_the_payload_and_every_attempt_with_its_error(cli, container, worker, fake_stripe):
    fake_stripe.fail_next(401)
    payload = summary_event("cus_1", [active_entitlement("feat_api", "api_access")])
    accept(container, payload)
    settle(container)
    shown = cli.json("events", "show", payload["id"])
    assert shown["event"]["status"] == EventStatus.FAILED
    assert shown["payload"] == payload
    assert len(shown["attempts"]) == 1
    assert "HTTP 401" in shown["attempts"][0]["error"]
    assert shown["attempts"][0]["outcome"] == EventStatus.FAILED
    assert cli("events", "show", payload["id"]).exit_code == 0
    missing = cli("events", "show", "evt_missing")
    assert missing.exit_code == 1 and "no event evt_missing" in missing.stderr


def test_failed_events_are_replayed_after_the_fault_is_gone_and_a_second_replay_is_harmless(
    cli, container, worker, fake_stripe
):
    fake_stripe.fail_next(401)
    event_id = accept(container, summary_event("cus_1", [active_entitlement("feat_api", "api_access")]))
    settle(container)
    assert stored_event(container, event_id).status == EventStatus.FAILED
    fake_stripe.set_entitlements("cus_1", [("feat_api", "api_access")])

    replayed = cli.json("events", "replay", "--failed", "--wait", "--timeout", "20")
    assert (replayed["queued"], replayed["event_ids"]) == (1, [event_id])
    assert [row["status"] for row in replayed["outcomes"]] == [EventStatus.PROCESSED]
    assert container.reader.has_access("cus_1", "api_access")

    again = cli.json("events", "replay", event_id, "--wait", "--timeout", "20")
    assert [row["status"] for row in again["outcomes"]] == [EventStatus.PROCESSED]
    assert container.history.history_of("cus_1")[0].change == "granted"
    assert len(container.history.history_of("cus_1")) == 1


def test_a_replay_that_fails_again_exits_1_and_says_why(cli, container, worker, fake_stripe):
    fake_stripe.fail_next(401, times=2)
    event_id = accept(container, summary_event("cus_1", []))
    settle(container)
    result = cli("events", "replay", event_id, "--wait", "--timeout", "20")
    assert result.exit_code == 1
    assert "failed" in result.stdout
    assert stored_event(container, event_id).attempts == 2


def test_replay_dry_run_changes_nothing_and_unknown_or_ignored_events_are_skipped(cli, container, fake_stripe):
    fake_stripe.fail_next(401)
    failed = accept(container, summary_event("cus_1", []))
    container.syncer.process_event(failed)
    ignored = accept(container, {**summary_event("cus_2", []), "type": "invoice.paid"})

    dry = cli.json("events", "replay", "--failed", "--dry-run")
    assert (dry["dry_run"], dry["event_ids"]) == (True, [failed])
    assert stored_event(container, failed).status == EventStatus.FAILED

    skipped = cli.json("events", "replay", ignored)
    assert skipped["queued"] == 0 and "ignored" in skipped["skipped"][ignored]
    unknown = cli.json("events", "replay", "evt_unknown", exit_code=1)
    assert "not in the inbox" in unknown["skipped"]["evt_unknown"]


def test_recover_pages_through_stripe_stores_what_the_inbox_lacks_and_processes_it(cli, container, worker, fake_stripe):
    stripes_events = subscribe_customers(fake_stripe, 115)  # 230 events: each customer subscribed and granted
    fake_stripe.events.record(event("invoice.paid", {"customer": "cus_x"}, created=int(time.time())))
    for payload in stripes_events[:40]:  # delivered before we went down
        accept(container, payload)
    settle(container)

    before = int(time.time())
    dry = cli.json("events", "recover", "--since", "1d", "--dry-run")
    after = int(time.time())
    assert (dry["seen"], dry["already_in_inbox"], dry["stored"]) == (230, 40, 190)
    assert count_events(container) == 40

    report = cli.json("events", "recover", "--since", "1d")
    assert (report["seen"], report["already_in_inbox"], report["stored"], report["ignored"]) == (
        230,
        40,
        190,
        0,
    )
    settle(container)
    assert count_events(container) == 230
    last = stripes_events[-1]["id"]
    recovered = stored_event(container, last)
    listed = {payload["id"]: payload for payload in fake_stripe.events.search()}
    assert (recovered.status, recovered.payload) == (EventStatus.PROCESSED, listed[last])  # as Stripe sent it
    assert container.reader.has_access("cus_0114", "api_access")

    listings = fake_stripe.calls_to("/v1/events")
    assert len(listings) == 6  # three pages of 100, 100 and 30, twice
    types = sorted(values[0] for key, values in listings[0].query.items() if key.startswith("types["))
    assert types == sorted(HANDLED_TYPES)
    assert before - 86_400 <= int(listings[0].query["created[gte]"][0]) <= after - 86_400


def test_recover_undelivered_asks_stripe_for_failed_deliveries_only(cli, container, fake_stripe):
    stripes_events = subscribe_customers(fake_stripe, 3)
    for payload in stripes_events[1:]:
        fake_stripe.events.mark_delivered(payload["id"])
    report = cli.json("events", "recover", "--since", "2h", "--undelivered")
    assert (report["seen"], report["stored"]) == (1, 1)
    assert stored_event(container, stripes_events[0]["id"]) is not None and count_events(container) == 1
    assert fake_stripe.calls_to("/v1/events")[0].query["delivery_success"] == ["false"]


def test_recover_past_thirty_days_warns_and_points_to_a_reconcile(cli, container):
    result = cli("events", "recover", "--since", "40d")
    assert result.exit_code == 0
    assert "30 days" in result.stderr and "sync all" in result.stderr
    assert "seen 0" in result.stdout


def test_an_ignored_event_keeps_only_its_envelope_so_a_replay_points_to_a_sync(cli, container, settings, broker):
    live_event = accept(container, summary_event("cus_1", [], livemode=True))  # our key is a test-mode key
    assert stored_event(container, live_event).status == EventStatus.IGNORED
    assert "live-mode event" in cli.json("events", "replay", live_event)["skipped"][live_event]

    live_key = bootstrap(replace(settings, stripe_api_key="sk_live_rotated"), broker=broker)
    replayed = Cli(live_key).json("events", "replay", live_event)
    assert replayed["queued"] == 0
    assert "only its envelope was kept" in replayed["skipped"][live_event]
    assert "sync all" in replayed["skipped"][live_event]
    assert stored_event(container, live_event).status == EventStatus.IGNORED
    live_key.close()


def test_recover_retries_a_5xx_and_exits_1_with_one_line_when_stripe_refuses(cli, container, fake_stripe, virtual_time):
    subscribe_customers(fake_stripe, 2)
    fake_stripe.fail_next(503)
    assert cli.json("events", "recover", "--since", "1h")["stored"] == 4
    assert virtual_time.slept == [0.5]

    fake_stripe.fail_next(401)
    refused = cli("events", "recover", "--since", "1h")
    assert refused.exit_code == 1
    assert "error: StripeRejected" in refused.stderr and "Traceback" not in refused.stderr
