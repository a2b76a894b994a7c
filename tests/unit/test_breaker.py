"""The receiver's circuit breaker, on a fake clock: no I/O, no sleeping."""

from entitlement_sync.breaker import CircuitBreaker


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_closed_breaker_lets_every_call_through():
    breaker = CircuitBreaker(5, clock=FakeClock())
    assert all(breaker.allows() for _ in range(3))
    assert not breaker.is_open


def test_after_a_failure_no_call_goes_through_for_the_pause():
    clock = FakeClock()
    breaker = CircuitBreaker(5, clock=clock)
    breaker.failed()
    assert not breaker.allows()
    clock.now += 4.9
    assert not breaker.allows()
    assert breaker.is_open


def test_after_the_pause_exactly_one_caller_probes():
    clock = FakeClock()
    breaker = CircuitBreaker(5, clock=clock)
    breaker.failed()
    clock.now += 5
    assert [breaker.allows() for _ in range(3)] == [True, False, False]


def test_a_successful_probe_closes_the_breaker():
    clock = FakeClock()
    breaker = CircuitBreaker(5, clock=clock)
    breaker.failed()
    clock.now += 5
    assert breaker.allows()
    breaker.succeeded()
    assert all(breaker.allows() for _ in range(3))
    assert not breaker.is_open


def test_a_failed_probe_opens_it_for_another_pause():
    clock = FakeClock()
    breaker = CircuitBreaker(5, clock=clock)
    breaker.failed()
    clock.now += 5
    assert breaker.allows()
    clock.now += 1
    breaker.failed()
    clock.now += 4.9
    assert not breaker.allows()
    clock.now += 0.1
    assert breaker.allows()


def test_a_probe_that_never_reports_back_costs_one_more_pause_not_forever():
    clock = FakeClock()
    breaker = CircuitBreaker(5, clock=clock)
    breaker.failed()
    clock.now += 5
    assert breaker.allows()  # the probe, which then says nothing
    clock.now += 4.9
    assert not breaker.allows()
    clock.now += 0.1
    assert breaker.allows()


def test_a_zero_pause_never_skips_a_call():
    breaker = CircuitBreaker(0, clock=FakeClock())
    breaker.failed()
    assert breaker.allows()


def test_each_change_of_state_is_told_once():
    now = [0.0]
    heard: list[str] = []
    breaker = CircuitBreaker(5, clock=lambda: now[0], on_change=heard.append)
    breaker.succeeded()
    breaker.failed()
    breaker.failed()
    assert not breaker.allows()
    now[0] = 6
    assert breaker.allows()
    breaker.succeeded()
    assert heard == ["open", "half_open", "closed"]


def test_a_call_allowed_before_a_failure_is_told_a_call_failed_since_but_a_probe_is_not():
    clock = FakeClock()
    breaker = CircuitBreaker(5, clock=clock)
    assert breaker.allows() and not breaker.failed_since_last_allowed
    breaker.failed()  # another caller's call failed meanwhile
    assert breaker.failed_since_last_allowed
    clock.now += 5
    assert breaker.allows()  # the probe
    assert not breaker.failed_since_last_allowed
    breaker.failed()
    assert breaker.failed_since_last_allowed
