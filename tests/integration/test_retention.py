"""Retention and privacy: ignored events keep only their envelope; `events prune` and the workers' daily prune
delete finished events past the window and nothing else."""

from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from entitlement_sync.bootstrap import bootstrap
from entitlement_sync.models import AccessChange, EventAttempt, EventStatus, StripeEvent, utcnow
from entitlement_sync.prune import Pruner
from entitlement_sync.settings import Settings
from entitlement_sync.testing import active_entitlement, event, summary_event
from tests.conftest import count_events, post_webhook, settle, stored_event


def payment_intent(customer="cus_1"):
    """What an endpoint subscribed to every event receives: a secret and an address we must not keep."""
    return {
        "id": "pi_3MtwBwLkdIwHu7ix28a3tqPa",
        "object": "payment_intent",
        "client_secret": "pi_3MtwBwLkdIwHu7ix28a3tqPa_secret_YrKJUKribcBjcG8HVhfZluoGH",
        "customer": customer,
        "shipping": {"name": "Jenny Rosen", "address": {"line1": "510 Townsend St", "city": "San Francisco"}},
        "amount": 2000,
    }


ENVELOPE_KEYS = {"id", "object", "type", "created", "livemode", "account", "envelope_only"}


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({**event("payment_intent.succeeded", payment_intent()), "account": "acct_1"}, id="type"),
        pytest.param(summary_event("cus_1", [active_entitlement("feat_api", "api_access")], livemode=True), id="mode"),
        pytest.param(
            {**summary_event("cus_1", [active_entitlement("feat_api", "api_access")]), "account": "acct_1"},
            id="account",
        ),
    ],
)
def test_an_ignored_event_is_stored_as_its_envelope_only(client, container, payload):
    response = post_webhook(client, payload)
    assert response.json["status"] == "ignored"
    row = stored_event(container, payload["id"])
    assert row.status == EventStatus.IGNORED and row.last_error  # the reason
    assert set(row.payload) == ENVELOPE_KEYS
    assert (row.payload["type"], row.payload["created"]) == (payload["type"], payload["created"])
    assert row.payload["livemode"] == payload["livemode"] and row.payload["account"] == payload.get("account")
    assert row.customer_id is None
    with container.engine.connect() as connection:  # nothing of the payload anywhere in the row
        raw = connection.execute(select(StripeEvent.__table__).where(StripeEvent.id == payload["id"])).one()
    assert "secret" not in repr(raw) and "Townsend" not in repr(raw) and "feat_api" not in repr(raw)


def finished_events(container, client, worker, count, customer="cus_old"):
    ids = []
    for n in range(count):
        payload = summary_event(f"{customer}_{n}", [active_entitlement("feat_api", "api_access")])
        post_webhook(client, payload)
        ids.append(payload["id"])
    settle(container)
    return ids


def backdate(container, event_ids, days):
    moment = utcnow() - timedelta(days=days)
    with container.engine.begin() as connection:
        statement = update(StripeEvent).where(StripeEvent.id.in_(event_ids))
        connection.execute(statement.values(received_at=moment, created=int(moment.timestamp())))


def set_status(container, event_id, status):
    with container.engine.begin() as connection:
        connection.execute(update(StripeEvent).where(StripeEvent.id == event_id).values(status=status))


def count(container, model):
    with container.new_session() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_prune_deletes_old_finished_events_and_their_attempts_but_keeps_failed_unfinished_and_history(
    client, container, worker, fake_stripe, cli
):
    fake_stripe.set_entitlements("cus_old_0", [("feat_api", "api_access")])
    old = finished_events(container, client, worker, 5)
    post_webhook(client, event("invoice.paid", payment_intent()))  # ignored, and recent: kept
    recent = finished_events(container, client, worker, 2, customer="cus_new")
    backdate(container, old, days=40)
    set_status(container, old[3], EventStatus.FAILED)
    set_status(container, old[4], EventStatus.QUEUED)  # unfinished: never touched, however old
    set_status(container, old[2], EventStatus.WAITING)  # waiting for Stripe: the sweep is still on it
    history = count(container, AccessChange)
    assert history > 0

    dry = cli.json("events", "prune", "--older-than", "35d", "--dry-run")
    assert (dry["events"], dry["by_status"], dry["attempts"]) == (2, {"processed": 2}, 2)
    assert count_events(container) == 8  # the dry run deleted nothing

    done = cli.json("events", "prune", "--older-than", "35d")
    assert (done["events"], done["by_status"], done["attempts"]) == (dry["events"], dry["by_status"], dry["attempts"])
    left = {row_id for row_id in [*old, *recent] if stored_event(container, row_id)}
    assert left == {old[2], old[3], old[4], *recent}
    assert count(container, AccessChange) == history  # the audit log is kept

    with_failed = cli.json("events", "prune", "--older-than", "35d", "--include-failed")
    assert with_failed["by_status"] == {"failed": 1}
    assert stored_event(container, old[4]).status == EventStatus.QUEUED
    assert stored_event(container, old[2]).status == EventStatus.WAITING
    with container.new_session() as session:
        orphans = session.scalar(
            select(func.count()).select_from(EventAttempt).where(EventAttempt.event_id.not_in(select(StripeEvent.id)))
        )
    assert orphans == 0


def test_prune_goes_in_batches_and_never_deletes_events_that_stripe_created_inside_the_window(
    client, container, worker
):
    old = finished_events(container, client, worker, 5)
    backdate(container, old, days=60)
    with container.engine.begin() as connection:  # recovered late: received long ago is not enough
        statement = update(StripeEvent).where(StripeEvent.id == old[0]).values(created=int(utcnow().timestamp()))
        connection.execute(statement)
    report = Pruner(container.new_session, utcnow, batch_size=2).prune(timedelta(days=35))
    assert report.events == 4
    assert [row_id for row_id in old if stored_event(container, row_id)] == [old[0]]


def test_prune_refuses_a_window_shorter_than_stripes_30_days_plus_a_margin(cli, container):
    for window in ("30d", "34d", "4w", "800h"):
        refused = cli("events", "prune", "--older-than", window)
        assert refused.exit_code == 2 and "shorter than 35 days" in refused.stderr, window
    assert cli("events", "prune", "--older-than", "yesterday").exit_code == 2
    with pytest.raises(ValueError, match="INBOX_RETENTION_DAYS=20"):
        Settings.from_env({"INBOX_RETENTION_DAYS": "20"})
    assert Settings.from_env({"INBOX_RETENTION_DAYS": "35"}).inbox_retention_days == 35


def test_the_daily_prune_runs_once_a_day_across_processes(settings, broker, client, container, worker):
    old = finished_events(container, client, worker, 2)
    backdate(container, old, days=40)
    today = [bootstrap(replace(settings, inbox_retention_days=35), broker=broker) for _ in range(2)]
    reports = [process.pruner.prune_if_due(35) for process in today]
    assert [report is not None for report in reports] == [True, False]  # the second process found it done
    assert reports[0].events == 2 and count_events(container) == 0

    tomorrow = Pruner(container.new_session, lambda: utcnow() + timedelta(days=1, minutes=1))
    assert tomorrow.prune_if_due(35) is not None
    today[0].upkeep()  # the workers' periodic job: folds the counts, and the prune is not due again today
    for process in today:
        process.close()
