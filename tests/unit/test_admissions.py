"""The Stripe budget's sliding window kept in this process (`admissions.py`), on virtual time. No I/O."""

import random

import pytest
from structlog.testing import capture_logs

from entitlement_sync.admissions import LATE_RETRIES, MARGIN_SECONDS, Budget, LocalPacer
from tests.fakes import VirtualTime, busiest_second, paced_moments

W = 1 + MARGIN_SECONDS  # one window: a second and the margin


def test_a_budget_of_n_a_second_admits_n_at_once_then_n_more_a_second_and_the_margin_later():
    time = VirtualTime(start=100.0)
    moments = paced_moments(LocalPacer(10, clock=time.now, sleep=time.sleep), time, 30)
    window = 1.0 + MARGIN_SECONDS
    assert moments == [pytest.approx(100.0 + window * (n // 10)) for n in range(30)]
    assert busiest_second(moments) == 10 and busiest_second(moments, window - 1e-6) == 10


def test_requests_that_reach_stripe_late_by_less_than_the_margin_never_put_more_than_n_in_one_second():
    """The delay between admission and arrival varies (a thread scheduled late, a slow connect): any delays
    within the margin keep every second at Stripe within the budget. Evenly spaced slots did not."""
    time, rng = VirtualTime(), random.Random(9)
    moments = paced_moments(LocalPacer(20, clock=time.now, sleep=time.sleep), time, 400)
    for trial in range(50):
        arrivals = [
            moment + rng.uniform(0, MARGIN_SECONDS) * (trial % 2 or n % 20 == 0) for n, moment in enumerate(moments)
        ]
        assert busiest_second(arrivals) <= 20


def test_a_request_woken_later_than_half_the_margin_takes_a_new_moment():
    time, oversleeps = VirtualTime(start=0.0), [0.2]

    def sleep(seconds: float) -> None:
        time.sleep(seconds + (oversleeps.pop() if oversleeps else 0.0))

    pacer = LocalPacer(1, clock=time.now, sleep=sleep)
    pacer()
    pacer()  # its moment was 1.2; woken at 1.4, it takes the next one (2.4) instead
    assert time.slept == [pytest.approx(1.4), pytest.approx(1.0)]
    assert pacer.admitted_since(-1) == [0.0, pytest.approx(1.2), pytest.approx(2.4)]


def test_a_request_woken_late_every_time_goes_after_the_last_retry_and_says_so():
    """An overloaded process that oversleeps every moment still sends (late), rather than never."""
    time = VirtualTime(start=0.0)
    pacer = LocalPacer(1, clock=time.now, sleep=lambda seconds: time.sleep(seconds + 0.5))
    pacer()
    with capture_logs() as lines:
        pacer()
    assert len(pacer.admitted_since(0)) == LATE_RETRIES + 1  # one moment per wake-up after the first request
    assert [line["event"] for line in lines] == ["pacer.went_late"]
    assert lines[0]["wakeups"] == LATE_RETRIES + 1


def test_after_a_quiet_spell_a_request_goes_at_once():
    time = VirtualTime()
    pacer = LocalPacer(10, clock=time.now, sleep=time.sleep)
    pacer()
    time.advance(5)
    pacer()
    assert time.slept == []


@pytest.mark.parametrize(
    ("rate", "share", "expected"),
    [
        (20, 1, Budget(20, W)),
        (2.5, 1, Budget(2, W)),
        (0.5, 1, Budget(1, 2 * W)),
        (20, 3, Budget(6, W)),
        (1, 3, Budget(1, 3 * W)),
    ],
)
def test_a_budget_and_its_shares_never_exceed_the_rate(rate, share, expected):
    budget = Budget.per_second(rate).share(share)
    assert (budget.limit, budget.window) == (expected.limit, pytest.approx(expected.window))
