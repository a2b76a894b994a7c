"""The small ones that bite, against the configured database: nasty signed bodies, markup in tables, the
subscription mirror, and a dry run that writes nothing."""

import json

import pytest
from sqlalchemy import event as sqlalchemy_event
from sqlalchemy import update

from entitlement_sync.events import event_from_payload, parse_event
from entitlement_sync.models import EventStatus, StripeEvent
from entitlement_sync.testing import active_entitlement, event, subscription, summary_event
from tests.conftest import count_events, post_webhook, stored_event

NASTY = {
    "deep": "[" * 100_000 + "]" * 100_000,
    "NaN": json.dumps(summary_event("cus_1", [])).replace('"livemode"', '"x": NaN, "livemode"'),
    "1e400": json.dumps(summary_event("cus_1", [])).replace('"livemode"', '"x": 1e400, "livemode"'),
    "created": json.dumps({**summary_event("cus_1", []), "created": 10**19}),
    "NUL id": json.dumps({**summary_event("cus_1", []), "id": "evt_\u0000"}),
    "NUL customer": json.dumps(summary_event("cus_\u0000", [])),
    "surrogate type": json.dumps({**summary_event("cus_1", []), "type": "x\udc00"}),
    "surrogate in payload": json.dumps({**summary_event("cus_1", []), "note": "\ud800"}),
}


@pytest.mark.parametrize("name", NASTY)
def test_a_signed_body_the_database_could_not_store_is_a_4xx_or_stored_never_a_500(client, container, name):
    response = post_webhook(client, NASTY[name].encode())
    assert response.status_code in (200, 400), (response.status_code, response.get_data(as_text=True)[:200])
    if response.status_code == 400:
        assert count_events(container) == 0


def test_cli_tables_print_database_and_stripe_strings_literally_never_as_markup(cli, container):
    payload = summary_event("cus_[b]1[/b]", [])
    container.receiver.accept_event(event_from_payload(payload))
    with container.engine.begin() as connection:
        statement = update(StripeEvent).where(StripeEvent.id == payload["id"])
        connection.execute(statement.values(last_error="[red]boom[/red] and [link=http://x]y[/link]"))
    listed = cli("events", "list")
    assert "[red]boom[/red]" in listed.stdout and "[link=http://x]y[" in listed.stdout
    assert "cus_[b]1[/b]" in listed.stdout
    shown = cli("events", "show", payload["id"])
    assert shown.exit_code == 0 and "[red]boom[/red]" in shown.stdout


def test_an_error_in_the_subscription_mirror_never_blocks_the_access_sync(container, fake_stripe):
    fake_stripe.set_entitlements("cus_1", [("feat_api", "api_access")])
    odd = subscription("sub_1", "cus_1", prices=[("price_1", "prod_1")])
    odd["items"]["data"][0]["current_period_end"] = "not a timestamp"  # a shape the mirror does not foresee
    payload = event("customer.subscription.updated", odd)
    container.receiver.accept_event(event_from_payload(payload))
    outcome = container.syncer.process_event(payload["id"])
    assert outcome.status == EventStatus.PROCESSED
    assert container.reader.has_access("cus_1", "api_access")


def test_features_sync_dry_run_executes_no_write_at_all(cli, container, fake_stripe):
    api = fake_stripe.create_feature("api_access", "Api Access", feature_id="feat_api")
    old = fake_stripe.create_feature("reports", "Reports", feature_id="feat_old")
    pro = fake_stripe.create_product([api, old], product_id="prod_pro")
    fake_stripe.archive_feature(old)
    fake_stripe.subscribe("cus_1", [pro])
    created = fake_stripe.events.of_type("customer.subscription.created")[0]
    container.receiver.accept_event(event_from_payload(created))
    container.syncer.process_event(created["id"])  # the subscription mirror now names prod_pro
    statements = []

    def record(conn, cursor, statement, *args):
        statements.append(statement.split(None, 1)[0].upper())

    sqlalchemy_event.listen(container.engine, "before_cursor_execute", record)
    try:
        dry = cli.json("features", "sync", "--dry-run")
    finally:
        sqlalchemy_event.remove(container.engine, "before_cursor_execute", record)
    assert statements and set(statements) <= {"SELECT", "WITH"}
    assert cli.json("features", "sync") | {"dry_run": True} == dry  # and it counted what the real run did


def test_processing_a_mirror_error_leaves_the_event_processed_with_no_error(container, fake_stripe):
    payload = event("customer.subscription.updated", {**subscription("sub_2", "cus_2"), "items": "garbage"})
    container.receiver.accept_event(event_from_payload(payload))
    outcome = container.syncer.process_event(payload["id"])
    assert outcome.status == EventStatus.PROCESSED
    assert stored_event(container, payload["id"]).last_error is None


def test_a_stored_event_holding_an_integer_past_64_bits_is_processed_and_kept_digit_for_digit(container, fake_stripe):
    """The receiver takes what the standard library's JSON takes; the worker must read it back as it was (a faster
    parser may not: orjson reads such an integer as a float, losing its last digits)."""
    odd = {**summary_event("cus_1", [active_entitlement("feat_api", "api_access")]), "big": 2**70 + 1}
    container.receiver.accept_event(parse_event(json.dumps(odd)))
    outcome = container.syncer.process_event(odd["id"], customer_id="cus_1")
    assert outcome.status == EventStatus.PROCESSED
    assert container.reader.has_access("cus_1", "api_access")
    assert stored_event(container, odd["id"]).payload["big"] == 2**70 + 1


def test_a_body_with_half_a_surrogate_pair_is_refused_with_the_reason_and_nothing_is_stored(client, container):
    """PostgreSQL stores such a body as `json` text, but refuses it in every statement that reads inside it (the
    worker's claim): stored, it would never be processed."""
    response = post_webhook(client, NASTY["surrogate in payload"].encode())
    assert response.status_code == 400
    assert "lone surrogate" in response.get_data(as_text=True)
    assert count_events(container) == 0


def test_an_event_stored_with_half_a_surrogate_pair_by_an_earlier_release_is_still_claimed_and_processed(
    container, fake_stripe
):
    """Such a body is refused at receipt now; one stored before must not stick in the queue: the claim never reads
    inside the stored text on the server, which refuses it there."""
    odd = {**summary_event("cus_1", [active_entitlement("feat_api", "api_access")]), "note": "\ud800"}
    container.receiver.accept_event(event_from_payload(odd))  # as a release that took it stored it
    outcome = container.syncer.process_event(odd["id"], customer_id="cus_1")
    assert outcome.status == EventStatus.PROCESSED
    assert container.reader.has_access("cus_1", "api_access")
