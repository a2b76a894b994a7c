"""`serve`, `worker` and `db upgrade` refuse to start without what they need: exit 2, one line naming it."""

import pytest
from click.testing import CliRunner

from entitlement_sync.cli import main, run
from entitlement_sync.settings import Settings

COMPLETE = {
    "STRIPE_API_KEY": "sk_test_x",
    "STRIPE_WEBHOOK_SECRETS": "whsec_x",
    "DATABASE_URL": "postgresql+psycopg://app@db/entitlements",
}


def test_settings_say_what_each_role_misses():
    assert Settings.from_env(COMPLETE).missing_for("serve") == []
    assert Settings.from_env({}).missing_for("serve") == ["STRIPE_API_KEY", "STRIPE_WEBHOOK_SECRETS", "DATABASE_URL"]
    assert Settings.from_env({}).missing_for("worker") == ["STRIPE_API_KEY", "DATABASE_URL"]
    only_key = {"STRIPE_API_KEY": "sk_test_x"}
    assert Settings.from_env(only_key).missing_for("db upgrade") == ["DATABASE_URL"]
    # The SQLite default is still there for dev and demo, which never ask.
    assert Settings.from_env({}).database_url.startswith("sqlite")


@pytest.fixture
def never_exec(monkeypatch):
    started = []
    monkeypatch.setattr(run, "_exec", lambda module, arguments: started.append(module))
    monkeypatch.setattr("entitlement_sync.db.upgrade", lambda url, revision="head": started.append("alembic"))
    return started


@pytest.mark.parametrize(
    ("command", "unset", "named"),
    [
        (["serve"], "STRIPE_API_KEY", "STRIPE_API_KEY"),
        (["serve"], "STRIPE_WEBHOOK_SECRETS", "STRIPE_WEBHOOK_SECRETS"),
        (["serve"], "DATABASE_URL", "DATABASE_URL"),
        (["worker"], "STRIPE_API_KEY", "STRIPE_API_KEY"),
        (["worker"], "DATABASE_URL", "DATABASE_URL"),
        (["db", "upgrade"], "DATABASE_URL", "DATABASE_URL"),
        (["db", "upgrade"], "STRIPE_API_KEY", "STRIPE_API_KEY"),
    ],
)
def test_a_missing_setting_exits_2_with_one_line_naming_it(never_exec, command, unset, named):
    environment = {**COMPLETE, unset: None}
    result = CliRunner().invoke(main, command, env=environment)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0] and "not set" in lines[0]
    assert never_exec == []


@pytest.mark.parametrize("command", [["serve"], ["worker"], ["db", "upgrade"]])
def test_with_every_setting_each_command_starts(never_exec, command):
    result = CliRunner().invoke(main, command, env=COMPLETE)
    assert result.exit_code == 0, result.output
    assert len(never_exec) == 1


def test_the_worker_does_not_need_webhook_secrets(never_exec):
    result = CliRunner().invoke(main, ["worker"], env={**COMPLETE, "STRIPE_WEBHOOK_SECRETS": None})
    assert result.exit_code == 0 and never_exec == ["dramatiq"]


@pytest.mark.parametrize("command", [["serve"], ["worker"]])
def test_an_unknown_log_level_stops_the_command_before_any_process_starts(never_exec, command):
    result = CliRunner().invoke(main, command, env={**COMPLETE, "LOG_LEVEL": "loud"})
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: LOG_LEVEL='loud' is not a log level; use one of DEBUG, INFO, WARNING, ERROR"
    assert never_exec == []
