"""The policy's settings: read from the environment by settings.py only, with defaults that change nothing."""

from datetime import timedelta

import pytest

from entitlement_sync.policy import PolicyRules
from entitlement_sync.settings import Settings


def test_the_defaults_withhold_nothing_grant_nothing_from_the_catalog_and_never_call_an_answer_stale():
    settings = Settings.from_env({})
    assert settings.policy_rules == PolicyRules()
    assert settings.stale_after is None


def test_the_policy_is_read_from_the_environment():
    settings = Settings.from_env(
        {
            "ACCESS_WITHHOLD_STATUSES": "paused, unpaid,incomplete_expired",
            "PAST_DUE_GRACE_DAYS": "7",
            "ACCESS_CATALOG_GRANTS": "true",
            "STALE_AFTER_SECONDS": "3600",
        }
    )
    assert settings.policy_rules == PolicyRules(
        frozenset({"paused", "unpaid", "incomplete_expired"}), timedelta(days=7), catalog_grants=True
    )
    assert settings.stale_after == timedelta(hours=1)
    assert Settings.from_env({"PAST_DUE_GRACE_DAYS": "0"}).policy_rules.past_due_grace == timedelta(0)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ACCESS_WITHHOLD_STATUSES": "paused,suspended"}, "suspended"),
        ({"PAST_DUE_GRACE_DAYS": "-1"}, "PAST_DUE_GRACE_DAYS"),
        ({"ACCESS_CATALOG_GRANTS": "maybe"}, "true or false"),
    ],
)
def test_a_mistyped_policy_setting_stops_the_process_with_a_reason(env, message):
    with pytest.raises(ValueError, match=message):
        Settings.from_env(env)
