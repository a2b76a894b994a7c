"""The pacer, the retry, `--since` parsing and the 30-day warning, on fakes and virtual time: no I/O."""

from datetime import UTC, datetime, timedelta

import click
import pytest
import redis

from entitlement_sync.backfill import retention_warning
from entitlement_sync.cli._common import parse_since
from entitlement_sync.errors import StripeRejected, StripeUnavailable
from entitlement_sync.pacing import HEADROOM, LocalPacer, RedisPacer, with_retries
from tests.fakes import VirtualTime, busiest_second, paced_moments


class ScriptedRedis:
    """A Redis client whose slot-reserving script answers from a list: a wait in seconds, or an error to raise."""

    def __init__(self, answers: list[str | Exception]) -> None:
        self.answers = answers

    def register_script(self, script: str):
        def run(keys: list[str], args: list[str]) -> str:
            answer = self.answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer

        return run


def test_the_local_pacer_spaces_requests_one_slot_apart_below_the_rate():
    time = VirtualTime()
    moments = paced_moments(LocalPacer(10, clock=time.now, sleep=time.sleep), time, 25)
    gaps = {round(b - a, 6) for a, b in zip(moments, moments[1:], strict=False)}
    assert gaps == {round(1 / (10 * HEADROOM), 6)}
    assert busiest_second(moments) == 10  # the whole budget, never more


def test_the_local_pacer_lets_a_request_through_at_once_after_a_quiet_spell():
    time = VirtualTime()
    pacer = LocalPacer(10, clock=time.now, sleep=time.sleep)
    pacer()
    time.advance(5)
    pacer()
    assert time.slept == []


def test_the_redis_pacer_waits_for_the_slot_redis_reserved():
    time = VirtualTime()
    pacer = RedisPacer(ScriptedRedis(["0.000000", "0.250000"]), "pacer", 10, clock=time.now, sleep=time.sleep)
    pacer()
    pacer()
    assert time.slept == [0.25]


def test_when_redis_goes_away_the_redis_pacer_keeps_pacing_this_process_alone():
    time = VirtualTime()
    gone = ScriptedRedis(["0.000000", *[redis.ConnectionError("Connection refused")] * 25])
    moments = paced_moments(RedisPacer(gone, "pacer", 10, clock=time.now, sleep=time.sleep), time, 26)
    assert busiest_second(moments) <= 10
    assert time.slept == [pytest.approx(1 / (10 * HEADROOM))] * 25  # the first one too: Redis's slot was just used


def test_retries_stripe_unavailable_with_doubling_pauses_then_gives_up():
    time, calls = VirtualTime(), []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise StripeUnavailable("HTTP 429")
        return "ok"

    assert with_retries(flaky, sleep=time.sleep) == "ok"
    assert time.slept == [0.5, 1.0]
    with pytest.raises(StripeUnavailable):
        with_retries(lambda: (_ for _ in ()).throw(StripeUnavailable("HTTP 503")), attempts=3, sleep=time.sleep)


def test_a_rejection_is_never_retried():
    calls = []

    def refused():
        calls.append(1)
        raise StripeRejected("HTTP 401")

    with pytest.raises(StripeRejected):
        with_retries(refused, sleep=lambda _: None)
    assert len(calls) == 1


def test_since_takes_durations_and_iso_dates():
    now = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    assert parse_since("2h", now) == now - timedelta(hours=2)
    assert parse_since("3d", now) == now - timedelta(days=3)
    assert parse_since("30m", now) == now - timedelta(minutes=30)
    assert parse_since("2026-11-20T08:00", now) == datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
    assert parse_since("2026-11-20T08:00+01:00", now) == datetime(2026, 11, 20, 7, 0, tzinfo=UTC)
    with pytest.raises(click.BadParameter):
        parse_since("last week", now)


def test_recovery_warns_only_past_stripes_thirty_days():
    now = datetime(2026, 11, 24, tzinfo=UTC)
    assert retention_warning(now - timedelta(days=29), now) is None
    assert "sync all" in retention_warning(now - timedelta(days=31), now)
