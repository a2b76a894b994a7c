"""Effective access end to end on a real database: each rule and each reason, recomputed as inputs change,
with its history; the clock's own changes applied by the sweep."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from entitlement_sync.bootstrap import Container, bootstrap
from entitlement_sync.events import event_from_payload
from entitlement_sync.models import EffectiveAccess, EffectiveAccessChange
from tests.integration.conftest import Cli


class Clock:
    """The service's and the simulated Stripe's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def unix(self) -> float:
        return self.now.timestamp()

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock(fake_stripe) -> Clock:
    clock = Clock()
    fake_stripe.clock = clock.unix
    return clock


@pytest.fixture
def service(container, settings, broker, clock) -> Iterator[Callable[..., Container]]:
    """A container with these settings (the `container` fixture has emptied the tables) on the test clock."""
    built: list[Container] = []

    def build(**overrides: Any) -> Container:
        built.append(bootstrap(replace(settings, **overrides), broker=broker, clock=clock))
        return built[-1]

    yield build
    for each in built:
        each.close()


def deliver(service: Container, fake_stripe) -> list[str]:
    """Store and process, in order, every event Stripe recorded that this test has not delivered yet."""
    seen: set[str] = fake_stripe.__dict__.setdefault("delivered_by_test", set())
    delivered = []
    for payload in fake_stripe.events.all():
        if payload["id"] in seen:
            continue
        seen.add(payload["id"])
        service.receiver.accept_event(event_from_payload(payload))
        service.syncer.process_event(payload["id"])
        delivered.append(payload["id"])
    return delivered


def history(service: Container, customer: str) -> list[tuple[str, str, str, str]]:
    with service.new_session() as session:
        rows = session.scalars(
            select(EffectiveAccessChange)
            .where(EffectiveAccessChange.customer_id == customer)
            .order_by(EffectiveAccessChange.id)
        )
        return [(row.lookup_key, row.change, row.reason, row.cause) for row in rows]


def subscribed(fake_stripe, customer: str = "cus_1", features: tuple[str, ...] = ("api_access",)) -> str:
    feature_ids = [fake_stripe.create_feature(key, feature_id=f"feat_{key}") for key in features]
    product = fake_stripe.create_product(feature_ids, product_id="prod_pro")
    return fake_stripe.subscribe(customer, [product])


def test_stripe_entitlements_are_effective_access_by_default(service, fake_stripe):
    app = service()
    subscribed(fake_stripe)
    created = deliver(app, fake_stripe)
    decision = app.reader.check("cus_1", "api_access")
    assert (decision.granted, decision.reason, decision.stale) == (True, "stripe_entitlement", False)
    assert [(s["kind"], s["detail"]) for s in decision.sources][0] == ("entitlement", "feat_api_access")
    assert app.reader.has_access("cus_1", "api_access")
    assert history(app, "cus_1") == [
        ("api_access", "granted", "stripe_entitlement", created[0])
    ]  # subscription.created


def test_a_paused_subscription_withholds_what_stripe_still_lists(service, fake_stripe):
    app = service(access_withhold_statuses=frozenset({"paused", "unpaid", "incomplete_expired"}))
    subscription = subscribed(fake_stripe)
    deliver(app, fake_stripe)
    fake_stripe.set_entitlements("cus_1", [("feat_api_access", "api_access")])  # Stripe keeps listing it
    fake_stripe.pause(subscription)
    pausing = deliver(app, fake_stripe)

    assert app.reader.entitlements_for("cus_1").lookup_keys == {"api_access"}  # the mirror: what Stripe says
    decision = app.reader.check("cus_1", "api_access")
    assert (decision.granted, decision.reason) == (False, "withheld:paused")
    assert {"kind": "subscription", "id": subscription, "detail": "paused"} in decision.sources
    assert not app.reader.has_access("cus_1", "api_access")
    assert history(app, "cus_1")[-1] == ("api_access", "revoked", "withheld:paused", pausing[0])

    fake_stripe.resume(subscription)
    resuming = deliver(app, fake_stripe)
    assert app.reader.check("cus_1", "api_access").reason == "stripe_entitlement"
    assert history(app, "cus_1")[-1] == ("api_access", "granted", "stripe_entitlement", resuming[0])


def test_past_due_keeps_access_for_its_grace_then_the_sweep_withholds_it(service, fake_stripe, clock):
    app = service(past_due_grace_days=3)
    subscription = subscribed(fake_stripe)
    deliver(app, fake_stripe)
    fake_stripe.set_status(subscription, "past_due")
    deliver(app, fake_stripe)
    clock.advance(days=2)
    fake_stripe.renew_subscription(subscription)  # a later event, still past_due: the grace keeps its start
    deliver(app, fake_stripe)
    app.sweep_once()
    assert app.reader.check("cus_1", "api_access").granted

    clock.advance(days=1, seconds=1)
    app.sweep_once()  # the workers' sweep thread runs this every SWEEP_INTERVAL_SECONDS
    decision = app.reader.check("cus_1", "api_access")
    assert (decision.granted, decision.reason) == (False, "withheld:past_due")
    assert history(app, "cus_1")[-1] == ("api_access", "revoked", "withheld:past_due", f"grace:{subscription}")
    app.sweep_once()
    assert len(history(app, "cus_1")) == 2  # nothing more to do: the review moment is gone


def test_a_grant_outside_stripe_lasts_until_its_expiry_and_the_sweep_ends_it(service, fake_stripe, clock):
    app = service()
    cli = Cli(app)
    subscribed(fake_stripe)
    deliver(app, fake_stripe)
    until = (clock.now + timedelta(hours=1)).isoformat()
    made = cli.json("access", "grant", "cus_1", "reports", "--until", until, "--reason", "pilot", "--by", "ana")
    assert (made["kind"], made["created_by"], made["reason"]) == ("grant", "ana", "pilot")
    assert [(c["lookup_key"], c["change"], c["reason"]) for c in made["changes"]] == [
        ("reports", "granted", "manual_grant")
    ]
    decision = app.reader.check("cus_1", "reports")
    assert (decision.granted, decision.reason) == (True, "manual_grant")
    assert decision.sources == [{"kind": "grant", "id": str(made["id"]), "detail": "pilot"}]
    assert [g["id"] for g in cli.json("access", "grants", "--customer", "cus_1")["grants"]] == [made["id"]]

    clock.advance(hours=1)
    app.sweep_once()
    assert (app.reader.check("cus_1", "reports").reason, app.reader.has_access("cus_1", "reports")) == (
        "no_entitlement",
        False,
    )
    assert history(app, "cus_1")[-1] == ("reports", "revoked", "no_entitlement", f"override:{made['id']}:expired")
    assert cli.json("access", "grants")["grants"] == []
    assert [g["id"] for g in cli.json("access", "grants", "--expired")["grants"]] == [made["id"]]


def test_a_grant_must_end_in_the_future_and_say_why(service, clock):
    cli = Cli(service())
    past = (clock.now - timedelta(minutes=1)).isoformat()
    result = cli("access", "grant", "cus_1", "reports", "--until", past, "--reason", "pilot")
    assert result.exit_code == 1 and "not in the future" in result.stderr
    assert cli("access", "grant", "cus_1", "reports", "--until", "30d").exit_code == 2  # --reason is required
    assert cli("access", "grant", "cus_1", "reports", "--reason", "pilot").exit_code == 2  # so is --until


def test_an_explicit_denial_beats_stripe_and_grants_until_revoked(service, fake_stripe):
    app = service()
    cli = Cli(app)
    subscribed(fake_stripe)
    deliver(app, fake_stripe)
    cli.json("access", "grant", "cus_1", "api_access", "--until", "30d", "--reason", "goodwill")
    denial = cli.json("access", "deny", "cus_1", "api_access", "--reason", "abuse", "--by", "bo")
    assert denial["expires_at"] is None
    assert app.reader.check("cus_1", "api_access").reason == "manual_denial"
    assert not app.reader.has_access("cus_1", "api_access")
    assert history(app, "cus_1")[-1] == ("api_access", "revoked", "manual_denial", f"override:{denial['id']}")

    revoked = cli.json("access", "revoke-grant", str(denial["id"]), "--by", "bo")
    assert revoked["revoked_by"] == "bo" and revoked["changes"][0]["change"] == "granted"
    assert app.reader.check("cus_1", "api_access").reason == "stripe_entitlement"
    assert history(app, "cus_1")[-1][3] == f"override:{denial['id']}:revoked"
    again = cli("access", "revoke-grant", str(denial["id"]))
    assert again.exit_code == 1 and "already revoked" in again.stderr
    assert [g["kind"] for g in cli.json("access", "grants", "--expired")["grants"]] == ["deny"]


def test_a_feature_attached_to_a_product_is_granted_by_the_catalog_before_stripe_lists_it(service, fake_stripe):
    app = service(access_catalog_grants=True)
    cli = Cli(app)
    subscription = subscribed(fake_stripe)
    deliver(app, fake_stripe)
    cli.json("features", "sync")
    reports = fake_stripe.create_feature("reports", feature_id="feat_reports")
    fake_stripe.attach_feature("prod_pro", reports)  # existing subscribers get it at their next period
    assert ("feat_reports", "reports") not in fake_stripe.truth("cus_1")

    assert cli.json("features", "sync")["access_changes"] == 1
    decision = app.reader.check("cus_1", "reports")
    assert (decision.granted, decision.reason) == (True, "catalog")
    assert {"kind": "product", "id": "prod_pro", "detail": "feat_reports"} in decision.sources
    assert history(app, "cus_1")[-1] == ("reports", "granted", "catalog", "catalog:sync")

    fake_stripe.renew_subscription(subscription)  # the next period: Stripe's list catches up
    deliver(app, fake_stripe)
    assert app.reader.check("cus_1", "reports").reason == "stripe_entitlement"
    assert history(app, "cus_1")[-1][:3] == ("reports", "updated", "stripe_entitlement")


def test_drift_shows_features_stripe_has_not_caught_up_with_both_ways_and_keeps_reused_keys_apart(service, fake_stripe):
    app = service()  # the catalog rule is off: drift is still reported, access is Stripe's
    cli = Cli(app)
    old = fake_stripe.create_feature("reports", feature_id="feat_old")
    fake_stripe.create_product([old], product_id="prod_pro")
    fake_stripe.subscribe("cus_1", ["prod_pro"])
    fake_stripe.subscribe("cus_2", ["prod_pro"])
    deliver(app, fake_stripe)
    fake_stripe.archive_feature(old)  # the key is reused by a successor, attached in its place
    new = fake_stripe.create_feature("reports", feature_id="feat_new")
    fake_stripe.attach_feature("prod_pro", new)
    fake_stripe.detach_feature("prod_pro", old)
    cli.json("features", "sync")

    drift = cli.json("features", "drift")
    assert drift["customers_checked"] == 2
    assert [d["customer"] for d in drift["customers"]] == ["cus_1", "cus_2"]
    first = drift["customers"][0]
    assert [(r["feature"], r["lookup_key"], r["products"]) for r in first["missing"]] == [
        ("feat_new", "reports", ["prod_pro"])
    ]
    assert [(r["feature"], r["lookup_key"]) for r in first["extra"]] == [("feat_old", "reports")]
    assert drift["by_feature"] == [
        {"feature": "feat_new", "lookup_key": "reports", "missing": 2, "extra": 0},
        {"feature": "feat_old", "lookup_key": "reports", "missing": 0, "extra": 2},
    ]
    assert drift["by_product"] == {"prod_pro": 2}
    assert app.reader.check("cus_1", "reports").reason == "stripe_entitlement"  # Stripe still lists feat_old
    assert "cus_1" in cli("features", "drift").stdout

    for subscription in fake_stripe.subscriptions:
        fake_stripe.renew_subscription(subscription)
    deliver(app, fake_stripe)
    assert cli.json("features", "drift")["customers"] == []


def test_explain_prints_the_whole_chain(service, fake_stripe):
    app = service(access_withhold_statuses=frozenset({"paused"}))
    cli = Cli(app)
    subscription = subscribed(fake_stripe)
    deliver(app, fake_stripe)
    fake_stripe.set_entitlements("cus_1", [("feat_api_access", "api_access")])
    fake_stripe.pause(subscription)
    deliver(app, fake_stripe)
    cli.json("access", "grant", "cus_1", "api_access", "--until", "2h", "--reason", "outage credit", "--by", "cy")

    shown = cli.json("access", "explain", "cus_1", "api_access")
    assert (shown["granted"], shown["reason"], shown["stale"]) == (True, "manual_grant", False)
    assert [(s["layer"], s["outcome"]) for s in shown["steps"]] == [
        ("stripe", "granted"),
        ("subscription", "withheld:paused"),
        ("catalog", "off"),
        ("override", "manual_grant"),
    ]
    assert shown["subscriptions"][0]["status"] == "paused"
    assert shown["overrides"][0]["reason"] == "outage credit"
    assert [h["reason"] for h in shown["history"]] == ["manual_grant", "withheld:paused", "stripe_entitlement"]
    assert shown["rules"]["withhold_statuses"] == ["paused"]
    text = cli("access", "explain", "cus_1", "api_access")
    assert text.exit_code == 0 and "withheld:paused" in text.stdout and "outage credit" in text.stdout
    never = cli.json("access", "explain", "cus_unknown", "api_access")
    assert (never["granted"], never["reason"]) == (False, "never_synced")


def test_changing_the_rules_takes_effect_with_access_recompute(service, fake_stripe):
    before = service()
    subscription = subscribed(fake_stripe)
    deliver(before, fake_stripe)
    fake_stripe.set_entitlements("cus_1", [("feat_api_access", "api_access")])
    fake_stripe.pause(subscription)
    deliver(before, fake_stripe)
    assert before.reader.has_access("cus_1", "api_access")  # the default rules withhold nothing

    after = service(access_withhold_statuses=frozenset({"paused"}))
    report = Cli(after).json("access", "recompute", "--all")
    assert report["customers"] == 1 and report["changes"][0]["reason"] == "withheld:paused"
    assert not after.reader.has_access("cus_1", "api_access")
    assert Cli(after)("access", "recompute").exit_code == 2


def test_an_answer_is_stale_when_the_last_sync_is_old_or_an_event_waits(service, fake_stripe, clock):
    app = service(stale_after_seconds=600)
    subscribed(fake_stripe)
    deliver(app, fake_stripe)
    assert app.reader.check("cus_1", "api_access").stale is False
    clock.advance(seconds=601)
    assert app.reader.check("cus_1", "api_access").stale is True
    app.syncer.sync_customer("cus_1")
    assert app.reader.effective_for("cus_1").stale is False

    fake_stripe.renew_subscription(fake_stripe.subscriptions_of("cus_1")[0].id)
    waiting = fake_stripe.events.all()[-1]
    app.receiver.accept_event(event_from_payload(waiting))  # stored, not yet processed
    assert app.reader.check("cus_1", "api_access").stale is True
    app.syncer.process_event(waiting["id"])
    assert app.reader.check("cus_1", "api_access").stale is False


def test_the_history_only_grows_with_increasing_ids(service, fake_stripe):
    app = service()
    cli = Cli(app)
    subscribed(fake_stripe)
    deliver(app, fake_stripe)
    grant = cli.json("access", "grant", "cus_1", "reports", "--until", "1d", "--reason", "trial")
    cli.json("access", "revoke-grant", str(grant["id"]))
    with app.new_session() as session:
        ids = list(session.scalars(select(EffectiveAccessChange.id).order_by(EffectiveAccessChange.changed_at)))
        assert ids == sorted(ids) and len(ids) == 3
        assert session.scalars(select(EffectiveAccess.lookup_key)).all() == ["api_access"]


def effective_rows(service: Container, customer: str) -> list[tuple[str, bool, str, Any]]:
    with service.new_session() as session:
        rows = session.scalars(
            select(EffectiveAccess).where(EffectiveAccess.customer_id == customer).order_by(EffectiveAccess.lookup_key)
        )
        return [(row.lookup_key, row.granted, row.reason, row.sources) for row in rows]


def test_a_syncs_recompute_decides_what_a_fresh_read_of_the_tables_decides(service, fake_stripe, clock):
    """The worker's write hands the recompute the inputs it read before writing (one read on PostgreSQL): a
    recompute that reads the tables afterwards finds nothing to change, whatever the inputs held."""
    app = service(access_withhold_statuses=frozenset({"paused"}), access_catalog_grants=True)
    subscription = subscribed(fake_stripe, features=("api_access", "reports"))
    deliver(app, fake_stripe)
    app.overrides.deny("cus_1", "reports", None, "abuse", "ana")
    app.overrides.grant("cus_1", "beta", clock.now + timedelta(days=1), "pilot", "ana")
    # Two features under one key, ids apart in case: their order is the order of the key's sources.
    fake_stripe.set_entitlements("cus_1", [("feat_a", "api_access"), ("feat_B", "api_access"), ("feat_x", "sso")])
    fake_stripe.renew_subscription(subscription)
    deliver(app, fake_stripe)

    after_sync = effective_rows(app, "cus_1")
    assert [(key, granted, reason) for key, granted, reason, _ in after_sync] == [
        ("api_access", True, "stripe_entitlement"),
        ("beta", True, "manual_grant"),
        ("reports", False, "manual_denial"),
        ("sso", True, "stripe_entitlement"),
    ]
    assert [s["detail"] for s in after_sync[0][3] if s["kind"] == "entitlement"] == ["feat_B", "feat_a"]
    assert app.access_policy.recompute_customers(["cus_1"], "check") == []
    assert effective_rows(app, "cus_1") == after_sync

    fake_stripe.pause(subscription)  # a subscription's change, then the fetch it causes
    deliver(app, fake_stripe)
    paused = effective_rows(app, "cus_1")
    assert paused[0][:3] == ("api_access", False, "withheld:paused")
    assert app.access_policy.recompute_customers(["cus_1"], "check") == []
    assert effective_rows(app, "cus_1") == paused
