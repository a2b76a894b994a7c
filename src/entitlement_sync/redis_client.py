"""Redis clients with timeouts that take effect: the one place a Redis connection pool is configured.

redis-py ignores connection arguments given beside a pool (Dramatiq's `RedisBroker(url=..., socket_timeout=...)`
builds its pool from the URL alone), so the timeouts go into the pool itself. Without them a Redis that
hangs instead of refusing holds every caller: 5 s with redis-py 8's default, forever with redis-py 5-7.
"""

from __future__ import annotations

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


def redis_client(url: str, *, socket_timeout: float, connect_timeout: float) -> redis.Redis:
    pool = redis.ConnectionPool.from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
        # One immediate retry on a broken connection (a pooled socket that Redis closed when it restarted), and
        # none on a timeout: redis-py 8 would otherwise retry a hung call up to 10 times, timeout after timeout.
        retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
    )
    return redis.Redis(connection_pool=pool)
