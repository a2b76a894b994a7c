"""`sync all` stops before applying when too many customers would lose every entitlement: each customer is
fetched once (a preview), and that same fetch is applied once the guard agrees, under its ticket."""

from sqlalchemy import func, select

from entitlement_sync.models import AccessChange
from entitlement_sync.revoke_guard import RevokeGuard

ACTIVE_ENTITLEMENTS = "/v1/entitlements/active_entitlements"


def customers_with_access(container, fake_stripe, count):
    """`count` subscribers holding api_access, synced into the table."""
    feature = fake_stripe.create_feature("api_access")
    product = fake_stripe.create_product([feature])
    customers = [f"cus_{n:03d}" for n in range(count)]
    subscriptions = {customer: fake_stripe.subscribe(customer, [product]) for customer in customers}
    for customer in customers:
        container.syncer.sync_customer(customer)
    return customers, subscriptions


def revocations(container):
    with container.new_session() as session:
        return session.scalar(select(func.count()).where(AccessChange.change == "revoked"))


def fetches(fake_stripe):
    return len(fake_stripe.calls_to(ACTIVE_ENTITLEMENTS))


def test_past_the_share_sync_all_stops_before_applying_and_says_what_to_do(cli, container, fake_stripe):
    customers, subscriptions = customers_with_access(container, fake_stripe, 30)
    for customer in customers[::3]:  # 10 of 30: a third would lose everything
        fake_stripe.cancel(subscriptions[customer])
    before = fetches(fake_stripe)

    result = cli("sync", "all", "--rate", "10000")
    assert result.exit_code == 3
    assert "would lose every entitlement" in result.stderr and "--yes" in result.stderr
    assert "doctor" in result.stderr
    assert revocations(container) == 0
    assert all(container.reader.has_access(customer, "api_access") for customer in customers)
    assert fetches(fake_stripe) - before == 20  # stopped once 20 were checked: the first sample


def test_dry_run_shows_the_count_and_writes_nothing(cli, container, fake_stripe):
    customers, subscriptions = customers_with_access(container, fake_stripe, 30)
    for customer in customers[:10]:
        fake_stripe.cancel(subscriptions[customer])
    report = cli.json("sync", "all", "--rate", "10000", "--dry-run")
    guard = report["revoke_guard"]
    assert (guard["losing_everything"], guard["checked"], guard["stopped"]) == (10, 30, True)
    assert report["revoked"] == 10 and report["checked"] == 30
    assert revocations(container) == 0
    text = cli("sync", "all", "--rate", "10000", "--dry-run")
    assert text.exit_code == 0 and "10 of" in text.stderr and "a real run would stop" in text.stderr


def test_yes_applies_the_previewed_fetch_without_a_second_call(cli, container, fake_stripe):
    customers, subscriptions = customers_with_access(container, fake_stripe, 30)
    for customer in customers[:10]:
        fake_stripe.cancel(subscriptions[customer])
    assert cli("sync", "all", "--rate", "10000").exit_code == 3
    before = fetches(fake_stripe)

    report = cli.json("sync", "all", "--rate", "10000", "--resume", "--yes")
    assert report["revoked"] == 10 and report["revoke_guard"]["stopped"] is False
    assert fetches(fake_stripe) - before == 30  # one fetch per customer: the preview is what was applied
    assert revocations(container) == 10
    assert not container.reader.has_access(customers[0], "api_access")
    assert container.reader.has_access(customers[10], "api_access")


def test_below_the_share_every_change_is_applied(cli, container, fake_stripe):
    customers, subscriptions = customers_with_access(container, fake_stripe, 30)
    for customer in customers[:3]:  # 10 %
        fake_stripe.cancel(subscriptions[customer])
    report = cli.json("sync", "all", "--rate", "10000")
    assert (report["revoked"], report["revoke_guard"]["losing_everything"]) == (3, 3)
    assert revocations(container) == 3


def test_the_share_is_judged_on_every_customer_past_the_first_sample(cli, container, fake_stripe):
    customers, subscriptions = customers_with_access(container, fake_stripe, 40)
    for customer in customers[30:]:  # the last ten: 10 of 40 = 25 %, crossed at the 38th customer
        fake_stripe.cancel(subscriptions[customer])
    result = cli("sync", "all", "--rate", "10000", "--max-revoke-share", "0.2")
    assert result.exit_code == 3
    # Everyone checked before the share was crossed was applied; customers at and after it were not.
    assert revocations(container) == 7
    assert container.reader.has_access(customers[37], "api_access")


def test_a_fetch_held_by_the_guard_never_overwrites_a_newer_one(container, fake_stripe):
    fake_stripe.set_entitlements("cus_1", [("feat_api", "api_access")])
    held = container.syncer.fetch("cus_1")  # previewed: ticket taken, Stripe says api_access
    fake_stripe.set_entitlements("cus_1", [])
    container.syncer.sync_customer("cus_1", cause="evt_newer")  # a worker applies a later fetch meanwhile
    result = container.syncer.apply(held, cause="ops:sync-all")
    assert not result.applied
    assert not container.reader.has_access("cus_1", "api_access")


def test_the_guard_holds_its_judgement_for_the_first_sample_then_judges_each_customer():
    guard = RevokeGuard(max_share=0.2, min_sample=3)
    guard.count(True, False, total=10)
    guard.count(True, True, total=10)
    assert not guard.decided and not guard.stopped
    guard.count(True, False, total=10)
    assert guard.decided and guard.stopped and guard.stopped_at == 3  # 1 of 3 > 20 %
