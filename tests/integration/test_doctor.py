"""`entitlement-sync doctor` against the real database and the simulated Stripe (through stripe-python)."""

from dataclasses import replace

import pytest

from entitlement_sync.bootstrap import bootstrap, build_doctor
from tests.integration.conftest import Cli

OTHER_KEY = "sk_test_key_of_another_account"


def test_a_healthy_deployment_is_all_well(cli, container, fake_stripe):
    fake_stripe.set_entitlements("cus_1", [("feat_api", "api_access")])
    container.syncer.sync_customer("cus_1")
    document = cli.json("doctor")
    found = {finding["check"]: finding for finding in document["findings"]}
    assert document["ok"] is True, document
    assert fake_stripe.account_id in found["stripe account"]["detail"]
    assert found["stripe customer"]["detail"].startswith("cus_1: Stripe answers, 1 active")
    assert found["database"]["level"] == "ok"
    text = cli("doctor")
    assert text.exit_code == 0 and "all is well" in text.stdout


def test_a_key_of_another_account_is_named_and_exits_1(container, fake_stripe):
    fake_stripe.set_entitlements("cus_1", [("feat_api", "api_access")])
    container.syncer.sync_customer("cus_1")
    other_account = fake_stripe.add_key_of_another_account(OTHER_KEY)
    wrong = bootstrap(replace(container.settings, stripe_api_key=OTHER_KEY), broker=container.broker)
    try:
        document = Cli(wrong).json("doctor", exit_code=1)
    finally:
        wrong.close()
    found = {finding["check"]: finding for finding in document["findings"]}
    assert other_account in found["stripe account"]["detail"]  # the account the key really belongs to
    assert found["stripe customer"]["level"] == "problem"
    assert "STRIPE_API_KEY belongs to another account or mode" in found["stripe customer"]["detail"]
    assert container.reader.has_access("cus_1", "api_access")


@pytest.mark.usefixtures("fake_stripe")
def test_a_database_without_the_schema_says_run_db_upgrade(settings, tmp_path):
    fresh = replace(settings, database_url=f"sqlite:///{tmp_path / 'empty.db'}")
    report = build_doctor(fresh).examine()
    database = next(finding for finding in report.findings if finding.check == "database")
    assert "no schema" in database.detail and "db upgrade" in (database.fix or "")
    assert not report.ok
