"""The pacer, the retry, `--since` parsing and the 30-day warning, on fakes: no database, no Stripe."""

import os
import threading
import time as real_time
import uuid
from datetime import UTC, datetime, timedelta

import click
import pytest
import redis

from entitlement_sync.backfill import retention_warning
from entitlement_sync.cli._common import parse_since
from entitlement_sync.errors import StripeRejected, StripeUnavailable
from entitlement_sync.pacing import HEADROOM, LocalPacer, RedisPacer, build_pacer, with_retries


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_the_local_pacer_spaces_requests_one_slot_apart_below_the_rate():
    time = FakeTime()
    pacer = LocalPacer(10, clock=time.clock, sleep=time.sleep)
    moments = []
    for _ in range(25):
        pacer()
        moments.append(time.now)
    gaps = {round(b - a, 6) for a, b in zip(moments, moments[1:], strict=False)}
    assert gaps == {round(1 / (10 * HEADROOM), 6)}
    assert sum(1 for moment in moments if moments[0] <= moment < moments[0] + 1) <= 10


def test_the_local_pacer_lets_a_request_through_at_once_after_a_quiet_spell():
    time = FakeTime()
    pacer = LocalPacer(10, clock=time.clock, sleep=time.sleep)
    pacer()
    time.now += 5
    pacer()
    assert time.slept == []


def test_retries_stripe_unavailable_with_doubling_pauses_then_gives_up():
    time, calls = FakeTime(), []

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


def test_two_redis_pacers_on_one_key_share_one_budget():
    client = redis.Redis.from_url(os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip("no Redis to share a budget through")
    key = f"entitlement-sync-test-{uuid.uuid4().hex[:8]}:stripe-pacer"
    pacers = [RedisPacer(client, key, rate=20), RedisPacer(client, key, rate=20)]
    moments, lock = [], threading.Lock()

    def run(pacer):
        for _ in range(15):
            pacer()
            with lock:
                moments.append(real_time.monotonic())

    threads = [threading.Thread(target=run, args=(pacer,)) for pacer in pacers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    moments.sort()
    busiest = max(sum(1 for m in moments if start <= m < start + 1) for start in moments)
    assert busiest <= 20
    assert build_pacer("redis://127.0.0.1:1/0", key, 5).shared is False  # unreachable: this process only
    client.delete(key)
