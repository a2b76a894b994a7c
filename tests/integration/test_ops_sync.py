"""`entitlement-sync sync …`: fetch and apply now; `sync all` paced, resumable, with a drift report."""

from dataclasses import replace

import pytest

from entitlement_sync.bootstrap import bootstrap
from entitlement_sync.models import Entitlement, utcnow
from entitlement_sync.testing import subscription
from tests.integration.conftest import Cli

API = ("feat_api", "api_access")
REPORTS = ("feat_reports", "reports")


def test_sync_customer_applies_and_prints_what_changed(cli, container, fake_stripe):
    fake_stripe.set_entitlements("cus_1", [API, REPORTS])
    result = cli("sync", "customer", "cus_1", "cus_2")
    assert result.exit_code == 0, result.stderr
    assert "api_access" in result.stdout and "no change" in result.stdout
    assert container.reader.entitlements_for("cus_1").lookup_keys == {"api_access", "reports"}

    fake_stripe.set_entitlements("cus_1", [API])
    dry = cli.json("sync", "customer", "cus_1", "--dry-run")
    assert dry["changes"] == [{"customer": "cus_1", "granted": [], "revoked": ["reports"], "error": None}]
    assert container.reader.has_access("cus_1", "reports")

    applied = cli.json("sync", "customer", "cus_1")
    assert (applied["checked"], applied["granted"], applied["revoked"]) == (1, 0, 1)
    assert not container.reader.has_access("cus_1", "reports")
    assert container.history.history_of("cus_1")[0].event == "ops:sync-customer"


def test_sync_customer_retries_stripe_429_and_5xx(cli, container, fake_stripe):
    fake_stripe.set_entitlements("cus_1", [API])
    fake_stripe.fail_next(429)
    fake_stripe.fail_next(503)
    report = cli.json("sync", "customer", "cus_1")
    assert (report["granted"], report["errors"]) == (1, 0)


def test_sync_customer_exits_1_when_stripe_refuses(cli, container, fake_stripe):
    fake_stripe.fail_next(401)
    report = cli.json("sync", "customer", "cus_1", exit_code=1)
    assert report["errors"] == 1 and "HTTP 401" in report["changes"][0]["error"]


def seed_thousand_customers(container, fake_stripe, ops_stripe):
    """950 customers with a subscription in Stripe, 50 known only locally (holding a grant Stripe dropped)."""
    ops_stripe.subscriptions = [subscription(f"sub_{n:04d}", f"cus_{n:04d}") for n in range(950)]
    for n in range(0, 950, 2):
        fake_stripe.set_entitlements(f"cus_{n:04d}", [API])
    with container.new_session.begin() as session:
        session.add_all(
            Entitlement(
                customer_id=f"cus_{n:04d}",
                feature_id="feat_api",
                lookup_key="api_access",
                entitlement_id=f"ent_{n}",
                granted_at=utcnow(),
            )
            for n in range(950, 1000)
        )


def test_sync_all_over_a_thousand_customers_resumes_after_an_interruption(cli, container, fake_stripe, ops_stripe):
    seed_thousand_customers(container, fake_stripe, ops_stripe)
    ops_stripe.interrupt_after = 400

    interrupted = cli("sync", "all", "--rate", "10000")
    assert interrupted.exit_code == 130
    assert "--resume" in interrupted.stderr
    assert sum(ops_stripe.entitlement_calls_per_customer().values()) == 400

    report = cli.json("sync", "all", "--rate", "10000", "--resume")
    calls = ops_stripe.entitlement_calls_per_customer()
    assert len(calls) == 1000 and set(calls.values()) == {1}  # every customer checked exactly once
    assert report["resumed_after"] == "cus_0399"
    assert (report["customers"], report["checked"]) == (600, 1000)
    assert (report["granted"], report["revoked"], report["errors"]) == (475, 50, 0)
    assert container.reader.has_access("cus_0948", "api_access")
    assert not container.reader.has_access("cus_0999", "api_access")


@pytest.mark.parametrize("through_redis", [True, False], ids=["shared-through-redis", "in-process"])
def test_sync_all_keeps_every_second_under_the_rate_cap(
    through_redis, container, settings, broker, fake_stripe, ops_stripe, request
):
    if not through_redis:  # Redis unreachable: the pacer falls back to this process
        container = bootstrap(replace(settings, redis_url="redis://127.0.0.1:1/0"), broker=broker)
        request.addfinalizer(container.close)
    ops_stripe.subscriptions = [subscription(f"sub_{n:03d}", f"cus_{n:03d}") for n in range(120)]
    report = Cli(container).json("sync", "all", "--rate", "50")
    assert (report["checked"], report["shared_pacer"]) == (120, through_redis)
    busiest = ops_stripe.max_requests_in_any_second()
    shared = report["shared_pacer"]
    print(f"pacer: at most {busiest} requests in any one-second window at --rate 50 (shared={shared})")
    assert 40 <= busiest <= 50


def test_sync_all_dry_run_writes_nothing(cli, container, fake_stripe, ops_stripe):
    ops_stripe.subscriptions = [subscription("sub_1", "cus_1")]
    fake_stripe.set_entitlements("cus_1", [API])
    report = cli.json("sync", "all", "--dry-run")
    assert (report["checked"], report["granted"]) == (1, 1)
    assert not container.reader.has_access("cus_1", "api_access")
    result = cli("sync", "all")
    assert result.exit_code == 0 and "1 grant(s)" in result.stdout
    assert container.reader.has_access("cus_1", "api_access")

    again = cli.json("sync", "all", "--resume")  # the last run finished: nothing to resume, a fresh run
    assert (again["resumed_after"], again["checked"], again["granted"]) == (None, 1, 0)
