"""The Stripe budget's sliding window, on virtual time: in this process, through a fake Redis, and across the
moments Redis goes away and comes back. No I/O."""

import random

import pytest
import redis
from structlog.testing import capture_logs

from entitlement_sync.breaker import CircuitBreaker
from entitlement_sync.pacing import LATE_RETRIES, MARGIN_SECONDS, AdmissionLog, Budget, LocalPacer, RedisPacer
from tests.fakes import VirtualTime, busiest_second, paced_moments


class RedisLog:
    """A Redis whose admission script keeps the same rule on a virtual clock. `away` makes every call fail as
    a Redis that went away does; `calls` counts round trips."""

    def __init__(self, time: VirtualTime) -> None:
        self.time, self.log, self.away, self.calls = time, AdmissionLog(), False, 0

    def register_script(self, script: str):
        def run(keys: list[str], args: list[object]) -> str:
            self.calls += 1
            if self.away:
                raise redis.ConnectionError("Connection refused")
            now = self.time.now()
            for age in args[3:]:
                self.log.record(now - float(age))
            return f"{self.log.admit(now, Budget(int(args[0]), float(args[1]))) - now:.6f}"

        return run


W = 1 + MARGIN_SECONDS  # one window: a second and the margin


def redis_pacer(log: RedisLog, time: VirtualTime, rate: float, share: int = 1) -> RedisPacer:
    breaker = CircuitBreaker(5.0, clock=time.now)
    return RedisPacer(log, "budget", rate, time.now, time.sleep, breaker=breaker, fallback_share=share)  # type: ignore[arg-type]


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


def test_the_redis_pacer_asks_once_per_request_and_waits_for_the_moment_redis_gave():
    time = VirtualTime(start=0.0)
    log = RedisLog(time)
    moments = paced_moments(redis_pacer(log, time, 5), time, 12)
    assert log.calls == 12
    assert moments == [pytest.approx(W * (n // 5)) for n in range(12)]


def test_when_redis_goes_away_a_process_waits_out_the_window_before_pacing_alone():
    """Another process took the whole budget through Redis just before it went away: nothing may go on top."""
    time = VirtualTime(start=0.0)
    log = RedisLog(time)
    other, this = redis_pacer(log, time, 10, share=2), redis_pacer(log, time, 10, share=2)
    paced_moments(other, time, 10)
    time.advance(0.01)
    log.away = True
    went = paced_moments(this, time, 6)
    assert went[0] == pytest.approx(0.01 + W)
    assert busiest_second(went, W - 1e-6) == 5  # its share


def test_the_budget_holds_across_processes_while_redis_goes_away_and_comes_back():
    time = VirtualTime(start=0.0)
    log = RedisLog(time)
    pacers = [redis_pacer(log, time, 10, share=2) for _ in range(2)]
    moments = []
    for phase_is_away in (False, True, False):
        log.away = phase_is_away
        for n in range(60):
            pacers[n % 2]()
            moments.append(time.now())
    assert len(moments) == 180 and busiest_second(moments) <= 10


def test_back_on_redis_a_process_hands_over_what_it_admitted_alone_within_the_window():
    time = VirtualTime(start=0.0)
    log = RedisLog(time)
    pacer = redis_pacer(log, time, 10)
    log.away = True
    pacer()  # fails at 0: the breaker keeps Redis out until 5; admitted alone at W
    time.advance(3.5)
    paced_moments(pacer, time, 3)  # alone, at 3.5 + W
    log.away = False
    time.advance(0.5)
    pacer()  # at 4 + W Redis answers again
    assert log.log.since(-1) == [pytest.approx(3.5 + W)] * 3 + [pytest.approx(4 + W)]


def test_back_on_redis_a_process_keeps_to_its_share_until_the_others_can_be_back_too():
    time = VirtualTime(start=0.0)
    log = RedisLog(time)
    pacer = redis_pacer(log, time, 10, share=2)
    log.away = True
    pacer()
    log.away = False
    time.advance(6)  # the breaker lets a request try Redis again
    moments = paced_moments(pacer, time, 10)
    assert busiest_second(moments, W - 1e-6) == 5
