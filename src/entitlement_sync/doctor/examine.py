"""Use case: `entitlement-sync doctor`. Is this deployment able to do its job? Each finding names the problem
and its fix; nothing is written anywhere.

Settings are checked first (presence and shape); Stripe, the database and the broker are asked only when the
settings they need are sound, through the ports of `ports/` (fakes in tests).
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import (
    StripeAccountUnreadable,
    StripeRejected,
    StripeUnavailable,
)
from ..ports import CustomerState, DatabaseProbe, StripeProbe
from ..settings import Settings
from ..sync import fetch_entitlements
from .findings import KEY_FIX, WRONG_ACCOUNT_FIX, DoctorReport, Finding, Level
from .settings_shape import check_settings


class Doctor:
    def __init__(
        self,
        settings: Settings,
        stripe: Callable[[], StripeProbe],
        database: Callable[[], DatabaseProbe],
        ping_broker: Callable[[], None],
    ) -> None:
        # Factories: an adapter is built only once the settings it needs have passed their checks.
        self._settings = settings
        self._stripe = stripe
        self._database = database
        self._ping_broker = ping_broker

    def examine(self) -> DoctorReport:
        report = DoctorReport(check_settings(self._settings))
        failed = {finding.check for finding in report.problems}
        known_customer: str | None = None
        if "DATABASE_URL" in failed:
            report.findings.append(_skipped("database", "DATABASE_URL"))
        else:
            findings, known_customer = self._check_database()
            report.findings += findings
        if failed & {"STRIPE_API_KEY", "STRIPE_API_BASE"}:
            report.findings.append(_skipped("stripe", "STRIPE_API_KEY or STRIPE_API_BASE"))
        else:
            report.findings += self._check_stripe(known_customer)
        if "REDIS_URL" in failed:
            report.findings.append(_skipped("broker", "REDIS_URL"))
        else:
            report.findings.append(self._check_broker())
        return report

    def _check_database(self) -> tuple[list[Finding], str | None]:
        """Reachable and at the latest migration; then a customer it holds, for the Stripe check."""
        try:
            database = self._database()
            current, head = database.revisions()
            customer = database.a_known_customer() if current == head else None
        except Exception as error:  # noqa: BLE001 (a diagnosis reports every failure, a missing driver included)
            fix = "check DATABASE_URL (host, port, user, password, database) and that the server accepts connections"
            return [Finding("database", Level.PROBLEM, f"unreachable: {_first_line(error)}", fix)], None
        if current != head:
            where = "has no schema" if current is None else f"is at revision {current}, the latest is {head}"
            fix = "run `entitlement-sync db upgrade`"
            return [Finding("database", Level.PROBLEM, f"reachable, but {where}", fix)], None
        return [Finding("database", Level.OK, f"reachable, migrated to the latest revision ({head})")], customer

    def _check_stripe(self, known_customer: str | None) -> list[Finding]:
        stripe = self._stripe()
        findings = [_check_account(stripe, self._settings)]
        if findings[0].level is Level.PROBLEM:
            return [*findings, _skipped("stripe customer", "the account check")]
        return [*findings, _check_customer(stripe, known_customer)]

    def _check_broker(self) -> Finding:
        try:
            self._ping_broker()
        except Exception as error:  # noqa: BLE001 (as above)
            fix = "check REDIS_URL and that Redis is running; webhooks are kept and swept meanwhile"
            return Finding("broker", Level.PROBLEM, f"Redis does not answer: {_first_line(error)}", fix)
        return Finding("broker", Level.OK, "Redis answers")


def _check_account(stripe: StripeProbe, settings: Settings) -> Finding:
    mode = {True: "live", False: "test", None: "unknown"}[settings.livemode]
    try:
        account = stripe.retrieve_account()
    except StripeAccountUnreadable:
        detail = f"{mode}-mode restricted key: it may not read GET /v1/account, so the account is not shown"
        return Finding("stripe account", Level.WARNING, detail)
    except StripeUnavailable as error:
        return Finding(
            "stripe account",
            Level.PROBLEM,
            f"Stripe did not answer: {error}",
            "check STRIPE_API_BASE and the network, then retry",
        )
    except StripeRejected as error:
        return Finding("stripe account", Level.PROBLEM, f"Stripe refused the key: {error}", KEY_FIX)
    name = f" ({account.name})" if account.name else ""
    return Finding("stripe account", Level.OK, f"{mode}-mode key of account {account.id}{name}")


def _check_customer(stripe: StripeProbe, customer: str | None) -> Finding:
    """One real call for a customer this database holds: the proof that key and data belong together."""
    check = "stripe customer"
    try:
        if customer is None:
            newest = stripe.list_one_customer()
            detail = f"no local customer yet; the key reads customers (newest: {newest or 'none'})"
            return Finding(check, Level.OK, detail)
        if stripe.customer_state(customer) is CustomerState.UNKNOWN:
            detail = (
                f"Stripe has no customer {customer}, whom this database holds: STRIPE_API_KEY belongs to another "
                "account or mode (account/mode mismatch)"
            )
            return Finding(check, Level.PROBLEM, detail, WRONG_ACCOUNT_FIX)
        count = len(fetch_entitlements(stripe, customer).entitlements)
    except StripeUnavailable as error:
        return Finding(
            check, Level.PROBLEM, f"Stripe did not answer: {error}", "check STRIPE_API_BASE and the network, then retry"
        )
    except StripeRejected as error:
        fix = "a restricted key needs read access to Customers and to Entitlements"
        return Finding(check, Level.PROBLEM, f"Stripe refused: {error}", fix)
    return Finding(check, Level.OK, f"{customer}: Stripe answers, {count} active entitlement(s)")


def _skipped(check: str, because: str) -> Finding:
    return Finding(check, Level.SKIPPED, f"not checked: fix {because} first")


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
