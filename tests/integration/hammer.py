"""What each spawned process of the pacing test runs."""

import time as wall_clock
from concurrent.futures import ThreadPoolExecutor

import redis

from entitlement_sync.pacing import RedisPacer


def hammer_one_budget(redis_url: str, key: str, rate: float, threads: int, calls: int, start_at: float) -> list[float]:
    """One process of test_pacing's hammering test (in a module of its own: a spawned process imports only
    this): `threads` threads each send `calls` requests through one pacer as fast as it lets them. Returns when
    each request was let go, on the wall clock (which Redis's TIME reads too)."""
    pacer = RedisPacer(redis.Redis.from_url(redis_url), key, rate)
    went: list[float] = []

    def send() -> None:
        for _ in range(calls):
            pacer()
            went.append(wall_clock.time())

    wall_clock.sleep(max(0.0, start_at - wall_clock.time()))
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(threads):
            pool.submit(send)
    return went
