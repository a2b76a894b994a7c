"""stripe-python's process-wide switches (`stripe_http.configure_stripe_python`): its client telemetry is off
unless STRIPE_CLIENT_TELEMETRY turns it on, and its log lines are formatted only when someone reads them, then
exactly as before (its logger, and stderr under `stripe.log`)."""

from __future__ import annotations

import importlib
import logging

import pytest
import stripe

from entitlement_sync.settings import Settings
from entitlement_sync.stripe_gateway import StripeGateway
from entitlement_sync.testing import FakeStripe
from tests.fakes import stripe_over_responses

API_KEY = "sk_test_switches"
STRIPE = "https://api.stripe.com"
TELEMETRY = "X-Stripe-Client-Telemetry"
REQUEST_LINE = "Request to Stripe api"


@pytest.fixture
def stripe_api():
    fake = FakeStripe(API_KEY)
    fake.set_entitlements("cus_1", [("feat_api", "api_access")])
    with stripe_over_responses(fake) as mock:
        yield mock


@pytest.fixture(autouse=True)
def stripe_globals_restored(monkeypatch):
    util = importlib.import_module("stripe._util")
    monkeypatch.setattr(stripe, "enable_telemetry", stripe.enable_telemetry)
    monkeypatch.setattr(stripe, "log", None)
    monkeypatch.setattr(util, "STRIPE_LOG", None)  # read from the environment when stripe-python is imported


def test_client_telemetry_is_off_unless_the_setting_turns_it_on():
    assert Settings.from_env({}).stripe_client_telemetry is False
    assert Settings.from_env({"STRIPE_CLIENT_TELEMETRY": "true"}).stripe_client_telemetry is True


@pytest.mark.parametrize(("turned_on", "sent"), [(False, [False, False]), (True, [False, True])])
def test_client_telemetry_goes_to_stripe_only_when_turned_on(stripe_api, turned_on, sent):
    gateway = StripeGateway(API_KEY, STRIPE, 2, client_telemetry=turned_on)
    for _ in range(2):  # the telemetry of a request rides on the next one
        gateway.list_active_entitlements("cus_1")

    assert [TELEMETRY in call.request.headers for call in stripe_api.calls] == sent


def test_stripe_pythons_log_lines_are_not_formatted_when_nobody_reads_them(stripe_api, monkeypatch, caplog):
    util = importlib.import_module("stripe._util")
    formatted: list[dict[str, object]] = []
    logfmt = util.logfmt

    def counted(props):
        formatted.append(props)
        return logfmt(props)

    monkeypatch.setattr(util, "logfmt", counted)
    caplog.set_level(logging.WARNING, logger="stripe")

    assert [e.lookup_key for e in StripeGateway(API_KEY, STRIPE, 2).list_active_entitlements("cus_1")] == ["api_access"]
    assert formatted == []


def test_stripe_pythons_log_lines_still_reach_its_logger_and_stderr_when_asked(stripe_api, caplog, capsys):
    gateway = StripeGateway(API_KEY, STRIPE, 2)
    caplog.set_level(logging.DEBUG, logger="stripe")
    gateway.list_active_entitlements("cus_1")
    assert any(REQUEST_LINE in record.getMessage() for record in caplog.records)
    assert any("API response body" in record.getMessage() for record in caplog.records)  # a debug line

    caplog.set_level(logging.WARNING, logger="stripe")
    stripe.log = "info"
    capsys.readouterr()
    gateway.list_active_entitlements("cus_1")
    assert REQUEST_LINE in capsys.readouterr().err
