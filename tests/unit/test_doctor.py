"""`doctor` on fakes: every setting's shape, the key's account, the database, the broker, a real customer call;
each problem named with its fix, and exit 0 only when all is well."""

from dataclasses import dataclass, field, replace

import pytest
from click.testing import CliRunner

from entitlement_sync.cli import main
from entitlement_sync.doctor import Doctor, Level
from entitlement_sync.errors import (
    CustomerNotFound,
    QueueUnavailable,
    StorageUnavailable,
    StripeAccountUnreadable,
    StripeRejected,
)
from entitlement_sync.ports import ActiveEntitlement, CustomerState, EntitlementsRead, StripeAccount
from entitlement_sync.settings import Settings

GOOD = Settings(
    stripe_api_key="sk_test_abc",
    webhook_secrets=("whsec_one", "whsec_two"),
    database_url="postgresql+psycopg://app:s3cret@db/entitlements",
    redis_url="redis://redis:6379/0",
    access_api_tokens=("token",),
)


@dataclass
class FakeStripe:
    account: StripeAccount | Exception = field(default_factory=lambda: StripeAccount("acct_1Platform", "Platform"))
    customers: dict[str, CustomerState] = field(default_factory=lambda: {"cus_1": CustomerState.EXISTS})

    def retrieve_account(self):
        if isinstance(self.account, Exception):
            raise self.account
        return self.account

    def customer_state(self, customer_id):
        return self.customers.get(customer_id, CustomerState.UNKNOWN)

    def read_active_entitlements(self, customer_id):
        if self.customers.get(customer_id) is not CustomerState.EXISTS:
            raise CustomerNotFound(f"No such customer: '{customer_id}'")
        return EntitlementsRead([ActiveEntitlement("ent_1", "feat_1", "api_access")])

    def list_one_customer(self):
        return next(iter(self.customers), None)


@dataclass
class FakeDatabase:
    current: str | None = "0002"
    head: str = "0002"
    customer: str | None = "cus_1"
    down: bool = False

    def revisions(self):
        if self.down:
            raise StorageUnavailable("connection refused")
        return self.current, self.head

    def a_known_customer(self):
        return self.customer


def examine(settings=GOOD, stripe=None, database=None, broker_down=False):
    stripe, database = stripe or FakeStripe(), database or FakeDatabase()

    def ping():
        if broker_down:
            raise QueueUnavailable("ConnectionError: Error 111 connecting to redis:6379")

    report = Doctor(settings, lambda: stripe, lambda: database, ping).examine()
    return report, {finding.check: finding for finding in report.findings}


def test_all_well_is_ok_and_says_which_account_and_mode():
    report, found = examine()
    assert report.ok, report.problems
    assert "acct_1Platform" in found["stripe account"].detail and "test-mode" in found["stripe account"].detail
    assert "cus_1" in found["stripe customer"].detail
    assert found["database"].level is Level.OK and found["broker"].level is Level.OK
    assert "s3cret" not in repr(report) and "whsec_one" not in repr(report)


@pytest.mark.parametrize(
    ("key", "said"),
    [("", "not set"), ("pk_test_abc", "publishable"), ("sk_abc", "neither test nor live"), ("abc", "not a Stripe key")],
)
def test_a_missing_or_misshapen_key_is_a_problem_and_stripe_is_not_asked(key, said):
    report, found = examine(replace(GOOD, stripe_api_key=key))
    assert not report.ok
    assert found["STRIPE_API_KEY"].level is Level.PROBLEM and said in found["STRIPE_API_KEY"].detail
    assert "sk_" in found["STRIPE_API_KEY"].fix
    assert found["stripe"].level is Level.SKIPPED


def test_a_restricted_key_that_may_not_read_the_account_is_a_warning_not_a_failure():
    refused = StripeAccountUnreadable("PermissionError: HTTP 403: restricted key")
    report, found = examine(replace(GOOD, stripe_api_key="rk_live_abc"), FakeStripe(account=refused))
    assert report.ok
    assert found["stripe account"].level is Level.WARNING and "restricted" in found["stripe account"].detail
    assert "live" in found["STRIPE_API_KEY"].detail


def test_a_key_stripe_refuses_is_a_problem():
    report, found = examine(stripe=FakeStripe(account=StripeRejected("AuthenticationError: HTTP 401: Invalid API Key")))
    assert not report.ok and "401" in found["stripe account"].detail
    assert found["stripe customer"].level is Level.SKIPPED


def test_a_key_of_another_account_is_named_with_its_fix():
    report, found = examine(stripe=FakeStripe(customers={}))
    assert not report.ok
    customer = found["stripe customer"]
    assert customer.level is Level.PROBLEM
    assert "STRIPE_API_KEY belongs to another account or mode" in customer.detail and "cus_1" in customer.detail
    assert "events replay --failed" in customer.fix


def test_without_a_local_customer_the_key_lists_one():
    report, found = examine(database=FakeDatabase(customer=None))
    assert report.ok and "no local customer yet" in found["stripe customer"].detail


def test_webhook_secrets_that_are_not_whsec_are_named_by_position_never_echoed():
    report, found = examine(replace(GOOD, webhook_secrets=("whsec_ok", "sk_test_pasted_by_mistake")))
    finding = found["STRIPE_WEBHOOK_SECRETS"]
    assert finding.level is Level.PROBLEM and "position 2" in finding.detail
    assert "pasted" not in repr(report)


def test_database_unset_unparsable_unreachable_or_behind():
    _, found = examine(replace(GOOD, database_url_given=False))
    assert found["DATABASE_URL"].level is Level.PROBLEM and found["database"].level is Level.SKIPPED
    _, found = examine(replace(GOOD, database_url="not a url"))
    assert found["DATABASE_URL"].level is Level.PROBLEM
    _, found = examine(replace(GOOD, database_url="sqlite:///x.db"))
    assert found["DATABASE_URL"].level is Level.WARNING
    _, found = examine(database=FakeDatabase(down=True))
    assert found["database"].level is Level.PROBLEM and "connection refused" in found["database"].detail
    _, found = examine(database=FakeDatabase(current="0001"))
    assert "0001" in found["database"].detail and "db upgrade" in found["database"].fix
    _, found = examine(database=FakeDatabase(current=None))
    assert "no schema" in found["database"].detail


def test_broker_down_and_bad_urls_are_problems_and_tokens_missing_a_warning():
    report, found = examine(broker_down=True)
    assert not report.ok and "Redis does not answer" in found["broker"].detail
    report, found = examine(replace(GOOD, redis_url="http://redis:6379", stripe_api_base="api.stripe.com"))
    assert found["REDIS_URL"].level is Level.PROBLEM and found["broker"].level is Level.SKIPPED
    assert found["STRIPE_API_BASE"].level is Level.PROBLEM
    report, found = examine(replace(GOOD, access_api_tokens=()))
    assert report.ok and found["ACCESS_API_TOKENS"].level is Level.WARNING


def test_the_command_from_a_broken_environment_names_each_problem_and_exits_1():
    environment = {
        "STRIPE_API_KEY": "pk_test_abc",
        "STRIPE_WEBHOOK_SECRETS": "whsec_x",
        "DATABASE_URL": "::not a url::",
        "REDIS_URL": "http://nowhere",
    }
    result = CliRunner().invoke(main, ["doctor", "--json"], env=environment)
    assert result.exit_code == 1
    import json

    document = json.loads(result.stdout)
    levels = {finding["check"]: finding["level"] for finding in document["findings"]}
    assert document["ok"] is False
    assert levels["STRIPE_API_KEY"] == levels["DATABASE_URL"] == levels["REDIS_URL"] == "problem"
    assert levels["stripe"] == levels["database"] == levels["broker"] == "skipped"


def test_a_setting_that_is_not_a_number_is_named():
    result = CliRunner().invoke(main, ["doctor"], env={"STRIPE_TIMEOUT_SECONDS": "five"})
    assert result.exit_code == 1 and "STRIPE_TIMEOUT_SECONDS must be a number" in result.stderr
