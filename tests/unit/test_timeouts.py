"""The timeouts reach the objects that apply them. Nothing here connects: pools and engines connect lazily."""

from datetime import timedelta

import redis

from entitlement_sync.bootstrap import pool_options
from entitlement_sync.db import create_db_engine
from entitlement_sync.ports import WaitRule
from entitlement_sync.settings import Settings
from entitlement_sync.tasks import build_redis_broker

ENV = {
    "REDIS_URL": "redis://127.0.0.1:1/3",
    "REDIS_TIMEOUT_SECONDS": "0.7",
    "REDIS_CONNECT_TIMEOUT_SECONDS": "0.4",
    "BROKER_BREAKER_SECONDS": "9",
    "DATABASE_STATEMENT_TIMEOUT_SECONDS": "2.5",
    "DATABASE_CONNECT_TIMEOUT_SECONDS": "4",
    "DATABASE_BREAKER_SECONDS": "1.5",
    "WEB_THREADS": "8",
    "WORKER_THREADS": "6",
}


def test_the_timeouts_are_read_from_the_environment():
    settings = Settings.from_env(ENV)
    assert (settings.redis_timeout_seconds, settings.redis_connect_timeout_seconds) == (0.7, 0.4)
    assert settings.broker_breaker_seconds == 9
    assert (settings.database_statement_timeout_seconds, settings.database_connect_timeout_seconds) == (2.5, 4)
    assert settings.database_breaker_seconds == 1.5
    assert (settings.web_threads, settings.worker_threads) == (8, 6)


def test_the_brokers_redis_pool_carries_the_timeouts_and_never_retries_a_timeout():
    broker = build_redis_broker(Settings.from_env(ENV))
    pool: redis.ConnectionPool = broker.client.connection_pool
    assert pool.connection_kwargs["socket_timeout"] == 0.7
    assert pool.connection_kwargs["socket_connect_timeout"] == 0.4
    assert pool.connection_kwargs["db"] == 3
    connection = pool.make_connection()
    assert connection.socket_timeout == 0.7
    # One retry, on a broken connection only: a hung Redis costs one timeout, not eleven (redis-py 8's default).
    assert connection.retry.get_retries() == 1
    assert connection.retry._supported_errors == (redis.ConnectionError,)


def test_the_postgresql_pool_is_sized_from_the_threads_and_sets_a_statement_timeout():
    settings = Settings.from_env(ENV)
    engine = create_db_engine("postgresql+psycopg://u@127.0.0.1:1/x", pool_options(settings, threads=6))
    assert engine.pool.size() == 6
    assert engine.pool._max_overflow == 2  # type: ignore[attr-defined]
    assert engine.pool._pre_ping is False  # type: ignore[attr-defined]
    assert engine.pool._recycle > 0  # type: ignore[attr-defined]
    engine.dispose()


def test_the_sweeps_pauses_for_a_waiting_event_double_up_to_the_configured_maximum():
    settings = Settings.from_env({"SWEEP_INTERVAL_SECONDS": "1", "RETRY_MAX_PAUSE_SECONDS": "8"})
    rule = WaitRule(
        first_pause=timedelta(seconds=settings.sweep_interval_seconds),
        max_pause=timedelta(seconds=settings.retry_max_pause_seconds),
    )
    assert [rule.pause(waits).total_seconds() for waits in range(6)] == [1, 2, 4, 8, 8, 8]
    assert Settings().retry_max_pause_seconds == 3600
