"""Shared fixtures. By default everything is embedded (SQLite, StubBroker, `responses`); with TEST_DATABASE_URL
and TEST_REDIS_URL set, the same tests run against PostgreSQL and the Redis broker.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import dramatiq
import pytest
from sqlalchemy import create_engine, delete, func, select, text

from entitlement_sync.bootstrap import Container, bootstrap
from entitlement_sync.db import upgrade
from entitlement_sync.models import UNFINISHED, Base, StripeEvent
from entitlement_sync.settings import Settings
from entitlement_sync.tasks import build_redis_broker, build_stub_broker
from entitlement_sync.testing import FakeStripe, sign
from entitlement_sync.web import create_app
from tests.fakes import VirtualTime, stripe_over_responses


def eventually(condition: Callable[[], bool], timeout: float = 30.0) -> bool:
    """Whether `condition` came true within `timeout` seconds (polled every 10 ms): for what other threads or
    processes do, and tests assert on its answer."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


WEBHOOK_SECRET = "whsec_test_primary"
API_KEY = "sk_test_simulator"
READ_TOKEN = "read-token-1"
TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL")
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL")


def pytest_report_header() -> str:
    database = "PostgreSQL" if TEST_DATABASE_URL else "SQLite"
    broker = "Redis" if TEST_REDIS_URL else "StubBroker"
    return f"entitlement-sync: database={database} broker={broker}"


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = TEST_DATABASE_URL or f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"
    engine = create_engine(url)
    with engine.begin() as connection:  # start from nothing, so the migrations are what is tested
        Base.metadata.drop_all(connection)
        connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
    engine.dispose()
    upgrade(url)
    return url


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        stripe_api_key=API_KEY,
        webhook_secrets=(WEBHOOK_SECRET,),
        database_url=database_url,
        redis_url=TEST_REDIS_URL or "",  # embedded: nothing reaches Redis, Stripe calls are paced in-process
        redis_namespace=f"entitlement-sync-test-{uuid.uuid4().hex[:8]}",
        access_api_tokens=(READ_TOKEN,),
        max_retries=3,
        min_backoff_ms=10,
        max_backoff_ms=50,
        stripe_requests_per_second=0,  # pacing has tests of its own; here it would only slow the suite
    )


@pytest.fixture
def broker(settings: Settings) -> Iterator[dramatiq.Broker]:
    broker = build_redis_broker(settings) if TEST_REDIS_URL else build_stub_broker()
    yield broker
    broker.flush_all()
    broker.close()


@pytest.fixture
def fake_stripe() -> Iterator[FakeStripe]:
    fake = FakeStripe(api_key=API_KEY)
    with stripe_over_responses(fake):
        yield fake


@pytest.fixture
def virtual_time() -> VirtualTime:
    return VirtualTime()


@pytest.fixture
def container(
    settings: Settings, broker: dramatiq.Broker, fake_stripe: FakeStripe, virtual_time: VirtualTime
) -> Iterator[Container]:
    # The ops retries and the Stripe pacing wait on virtual time: the suite never sleeps for them.
    container = bootstrap(settings, broker=broker, sleep=virtual_time.sleep, monotonic=virtual_time.now)
    with container.engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(delete(table))
    yield container
    container.close()


@pytest.fixture
def worker(container: Container) -> Iterator[dramatiq.Worker]:
    worker = dramatiq.Worker(container.broker, worker_timeout=50, worker_threads=4)
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture
def client(container: Container) -> Any:
    return create_app(container).test_client()


def post_webhook(client: Any, payload: dict[str, Any] | bytes, *, secret: str = WEBHOOK_SECRET, **headers: str) -> Any:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers.setdefault("Stripe-Signature", sign(body, secret))
    return client.post("/webhooks/stripe", data=body, headers=headers, content_type="application/json")


def settle(container: Container, timeout: float = 30.0) -> None:
    """Wait until no stored event is left unfinished (received, queued or processing)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with container.new_session() as session:
            unfinished = session.scalar(select(func.count()).where(StripeEvent.status.in_(UNFINISHED)))
        if not unfinished:
            return
        time.sleep(0.02)
    raise AssertionError(f"{unfinished} events still unfinished after {timeout} s")


def stored_event(container: Container, event_id: str) -> StripeEvent | None:
    with container.new_session() as session:
        return session.get(StripeEvent, event_id)


def count_events(container: Container) -> int:
    with container.new_session() as session:
        return int(session.scalar(select(func.count()).select_from(StripeEvent)) or 0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """End-to-end tests need real PostgreSQL and Redis: skipped on a bare machine, never skipped in CI."""
    if TEST_DATABASE_URL and TEST_REDIS_URL:
        return
    if os.environ.get("ENTITLEMENT_SYNC_REQUIRE_SERVICES"):
        raise pytest.UsageError("TEST_DATABASE_URL and TEST_REDIS_URL must be set: real-service tests may not skip")
    skip = pytest.mark.skip(reason="needs TEST_DATABASE_URL and TEST_REDIS_URL (real PostgreSQL and Redis)")
    for item in items:
        if "e2e" in item.keywords:
            item.add_marker(skip)
