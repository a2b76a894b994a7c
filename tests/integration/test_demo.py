"""`entitlement-sync demo` plays its story end to end (its own SQLite, simulator and in-process worker)."""

import re

import pytest
import structlog
from click.testing import CliRunner

from entitlement_sync.cli import main


def step_output(output, number):
    """The text printed for step `number`, up to the next step's rule or the end."""
    start = re.search(rf"─ {number}\. ", output).start()
    following = re.search(rf"─ {number + 1}\. ", output)
    return output[start : following.start() if following else len(output)]


@pytest.fixture(scope="module")
def demo():
    """One run shared by the tests below: each reads a different part of its output."""
    logging_before = structlog.get_config()
    result = CliRunner().invoke(main, ["demo"])
    result.logging_changed = structlog.get_config() != logging_before
    return result


def test_the_demo_plays_its_story_and_the_table_follows_stripe_at_every_step(demo):
    result = demo
    assert result.exit_code == 0, result.output
    assert result.output.count("matches Stripe") == 7
    assert "differs from Stripe" not in result.output
    assert "Traceback" not in result.output
    assert "Done in" in result.output


def test_after_the_key_is_reused_alice_holds_reports_under_two_feature_ids(demo):
    output = demo.output
    reused = step_output(output, 3)
    features = set(re.findall(r"│ cus_alice │ reports\s+│ (feat_\w+)", reused))
    assert len(features) == 2
    assert "+ granted cus_alice reports" in reused


def test_a_duplicate_changes_nothing_and_a_paused_trial_revokes_bob(demo):
    output = demo.output
    assert "no change" in step_output(output, 5)
    assert "stored 0 new rows" in step_output(output, 5)
    assert "- revoked cus_bob api_access" in step_output(output, 6)


def test_after_cancellation_alice_has_nothing_left(demo):
    output = demo.output
    final = step_output(output, 7)
    assert "- revoked cus_alice api_access" in final
    assert "│ cus_alice" not in final
    assert "(empty)" in final


def test_the_demo_gives_the_process_its_logging_back(demo):
    assert demo.logging_changed is False
