"""`entitlement-sync sync …`: fetch and apply now; `sync all` paced, resumable, with a drift report."""

from dataclasses import replace

import pytest
import redis

from entitlement_sync.admissions import MARGIN_SECONDS
from entitlement_sync.bootstrap import bootstrap
from entitlement_sync.models import Entitlement, utcnow
from tests.conftest import TEST_REDIS_URL
from tests.fakes import ACTIVE_ENTITLEMENTS, busiest_second, entitlement_calls_per_customer
from tests.integration.conftest import Cli, book_the_budget_an_hour_ahead, subscribe_customers

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


def test_sync_customer_retries_stripe_429_and_5xx_with_doubling_pauses(cli, container, fake_stripe, virtual_time):
    fake_stripe.set_entitlements("cus_1", [API])
    fake_stripe.fail_next(429)
    fake_stripe.fail_next(503)
    report = cli.json("sync", "customer", "cus_1")
    assert (report["granted"], report["errors"]) == (1, 0)
    assert virtual_time.slept == [0.5, 1.0]


def test_sync_customer_exits_1_when_stripe_refuses(cli, container, fake_stripe):
    fake_stripe.fail_next(401)
    report = cli.json("sync", "customer", "cus_1", exit_code=1)
    assert report["errors"] == 1 and "HTTP 401" in report["changes"][0]["error"]


def seed_thousand_customers(container, fake_stripe):
    """950 customers with a subscription in Stripe (every other one granting api_access), 50 known only
    locally, holding a grant Stripe dropped."""
    subscribe_customers(fake_stripe, 950, granting=lambda n: n % 2 == 0)
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


def press_ctrl_c_before_fetching_customer(fake_stripe, number):
    """Raise KeyboardInterrupt, as Ctrl-C would, when the `number`-th customer's fetch reaches Stripe."""

    def hook(method, path, query):
        if path == ACTIVE_ENTITLEMENTS and len(fake_stripe.calls_to(ACTIVE_ENTITLEMENTS)) == number - 1:
            fake_stripe.remove_request_hook(hook)
            raise KeyboardInterrupt

    fake_stripe.add_request_hook(hook)


def test_sync_all_over_a_thousand_customers_resumes_after_an_interruption(cli, container, fake_stripe):
    seed_thousand_customers(container, fake_stripe)
    press_ctrl_c_before_fetching_customer(fake_stripe, 401)

    interrupted = cli("sync", "all", "--rate", "10000")
    assert interrupted.exit_code == 130
    assert "--resume" in interrupted.stderr
    assert sum(entitlement_calls_per_customer(fake_stripe).values()) == 400

    report = cli.json("sync", "all", "--rate", "10000", "--resume")
    calls = entitlement_calls_per_customer(fake_stripe)
    assert len(calls) == 1000 and set(calls.values()) == {1}  # every customer checked exactly once
    assert report["resumed_after"] == "cus_0399"
    assert (report["customers"], report["checked"]) == (600, 1000)
    assert (report["granted"], report["revoked"], report["errors"]) == (475, 50, 0)
    assert container.reader.has_access("cus_0948", "api_access")
    assert not container.reader.has_access("cus_0999", "api_access")


def test_sync_all_in_process_keeps_every_second_under_the_rate_cap(
    container, settings, broker, fake_stripe, virtual_time, request
):
    """Without Redis the pacer paces this process alone. Requests are stamped on the pacer's (virtual)
    timeline, so the count per second is exact, not a measurement."""
    local = bootstrap(
        replace(settings, redis_url=""), broker=broker, sleep=virtual_time.sleep, monotonic=virtual_time.now
    )
    request.addfinalizer(local.close)
    fake_stripe.clock = virtual_time.now
    subscribe_customers(fake_stripe, 120)
    report = Cli(local).json("sync", "all", "--rate", "50")
    assert (report["checked"], report["shared_pacer"]) == (120, False)
    assert set(entitlement_calls_per_customer(fake_stripe).values()) == {1}
    assert busiest_second(call.at for call in fake_stripe.calls) <= 50


@pytest.mark.skipif(not TEST_REDIS_URL, reason="needs TEST_REDIS_URL: the budget is shared through Redis")
def test_sync_all_queues_behind_the_budget_other_processes_reserved_in_redis(cli, settings, fake_stripe, virtual_time):
    """The workers have reserved the shared budget an hour ahead: every request of `sync all` takes the next
    slot after theirs, one interval apart, whatever the time it takes to send it."""
    client = redis.Redis.from_url(TEST_REDIS_URL)
    key = f"{settings.redis_namespace}:stripe-budget"
    booked = book_the_budget_an_hour_ahead(client, key)
    subscribe_customers(fake_stripe, 120)

    report = cli.json("sync", "all", "--rate", "50")
    assert (report["checked"], report["shared_pacer"]) == (120, True)
    requests = len(fake_stripe.calls)
    assert len(virtual_time.slept) == requests and min(virtual_time.slept) > 3500  # each one waited its turn
    taken = [score for _, score in client.zrange(key, 0, -1, withscores=True) if score > booked]
    assert len(taken) == requests and busiest_second(taken, 1 + MARGIN_SECONDS - 1e-6) <= 50
    client.delete(key)


def test_sync_all_dry_run_writes_nothing(cli, container, fake_stripe):
    subscribe_customers(fake_stripe, 1)
    report = cli.json("sync", "all", "--dry-run")
    assert (report["checked"], report["granted"]) == (1, 1)
    assert not container.reader.has_access("cus_0000", "api_access")
    result = cli("sync", "all")
    assert result.exit_code == 0 and "1 grant(s)" in result.stdout
    assert container.reader.has_access("cus_0000", "api_access")

    again = cli.json("sync", "all", "--resume")  # the last run finished: nothing to resume, a fresh run
    assert (again["resumed_after"], again["checked"], again["granted"]) == (None, 1, 0)
