from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import create_engine, delete

from entitlement_sync.models import Base
from entitlement_sync.testing import FakeStripe, StripeSimulatorServer
from tests.conftest import TEST_DATABASE_URL, TEST_REDIS_URL
from tests.e2e.harness import API_KEY, Service, ServiceEnvironment
from tests.e2e.invariants import RESULTS, Inspector
from tests.webhook_subscriber import Subscriber


def empty_tables(database_url: str) -> None:
    engine = create_engine(database_url)
    with engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(delete(table))
    engine.dispose()


@pytest.fixture
def inspector() -> Iterator[Inspector]:
    """Reads the service's database: statuses, rows, attempts."""
    assert TEST_DATABASE_URL
    inspector = Inspector(TEST_DATABASE_URL)
    yield inspector
    inspector.close()


@pytest.fixture
def simulator() -> Iterator[StripeSimulatorServer]:
    with StripeSimulatorServer(FakeStripe(api_key=API_KEY)) as server:
        yield server


@pytest.fixture
def launch(tmp_path, request) -> Iterator[Callable[..., Service]]:
    """Builds a Service on a migrated, emptied database; each is stopped at teardown, logs shown on failure.

    Defaults to TEST_DATABASE_URL and TEST_REDIS_URL; scenarios with private servers pass their own URLs.
    """
    started: list[Service] = []

    def launch_service(
        stripe_url: str, *, database_url: str | None = None, redis_url: str | None = None, **extra: str
    ) -> Service:
        database_url = database_url or TEST_DATABASE_URL
        assert database_url and (redis_url or TEST_REDIS_URL)
        environment = ServiceEnvironment(database_url, redis_url or TEST_REDIS_URL or "", stripe_url, extra=extra)
        service = Service(environment, tmp_path)
        # Migrate before emptying the tables: on a fresh database they do not exist yet.
        service.migrate()
        empty_tables(database_url)
        started.append(service)
        return service

    yield launch_service
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for service in started:
        if failed:
            print(service.logs())
        service.stop()


@pytest.fixture
def service(simulator: StripeSimulatorServer, launch: Callable[..., Service]) -> Service:
    return launch(simulator.url)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):  # type: ignore[no-untyped-def]
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    if not RESULTS:
        return
    terminalreporter.section("fault-injection figures")
    for scenario, figures in RESULTS:
        terminalreporter.write_line(f"{scenario}:")
        for name, value in figures.items():
            terminalreporter.write_line(f"    {name}: {value}")


@pytest.fixture
def access_subscriber() -> Iterator[Subscriber]:
    """A receiver of the service's access webhooks on a free port (pass `access_subscriber.entry` as
    ACCESS_WEBHOOK_URLS); `down()`/`up()` take it away and back, `granted()` is its copy of the table."""
    with Subscriber() as subscriber:
        yield subscriber
