from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, delete

from entitlement_sync.models import Base
from entitlement_sync.testing import FakeStripe, StripeSimulatorServer
from tests.conftest import TEST_DATABASE_URL, TEST_REDIS_URL
from tests.e2e.harness import API_KEY, Service, ServiceEnvironment


@pytest.fixture
def simulator() -> Iterator[StripeSimulatorServer]:
    with StripeSimulatorServer(FakeStripe(api_key=API_KEY)) as server:
        yield server


@pytest.fixture
def service(simulator: StripeSimulatorServer, tmp_path, request) -> Iterator[Service]:
    assert TEST_DATABASE_URL and TEST_REDIS_URL
    engine = create_engine(TEST_DATABASE_URL)
    with engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(delete(table))
    engine.dispose()
    service = Service(ServiceEnvironment(TEST_DATABASE_URL, TEST_REDIS_URL, simulator.url), tmp_path)
    service.migrate()
    yield service
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    if failed:
        print(service.logs())
    service.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):  # type: ignore[no-untyped-def]
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
