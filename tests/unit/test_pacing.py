"""The Stripe budget's sliding window shared through Redis (`pacing.RedisPacer`), on virtual time: through a fake
Redis, and across the moments Redis goes away and comes back. No I/O."""

import pytest
import redis

from entitlement_sync.admissions import MARGIN_SECONDS, AdmissionLog, Budget
from entitlement_sync.breaker import CircuitBreaker
from entitlement_sync.pacing import RedisPacer
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
