"""The retry, `--since` parsing and the 30-day warning, on fakes and virtual time: no I/O."""

from datetime import UTC, datetime, timedelta

import click
import pytest

from entitlement_sync.backfill import retention_warning
from entitlement_sync.cli._common import parse_since
from entitlement_sync.errors import StripeRejected, StripeUnavailable
from entitlement_sync.pacing import with_retries
from tests.fakes import VirtualTime


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
