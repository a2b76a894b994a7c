"""Fixtures for the ops commands: logs as a real run sets them up, and a CLI runner (`cli`)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
import structlog
from click.testing import CliRunner, Result
from sqlalchemy import Engine

from entitlement_sync.bootstrap import Container
from entitlement_sync.cli import main
from entitlement_sync.testing import FakeStripe


@pytest.fixture(autouse=True)
def logs_on_stderr() -> Iterator[None]:
    """As `entitlement-sync` configures them in a real run, so that `--json` stdout holds only the document.

    The stream is looked up at each call: CliRunner swaps sys.stderr for every invocation.
    """
    structlog.configure(logger_factory=lambda *args: structlog.PrintLogger(sys.stderr), cache_logger_on_first_use=False)
    yield
    structlog.reset_defaults()


class Cli:
    """`entitlement-sync …` through click's CliRunner, with the test container as click's `obj`."""

    def __init__(self, container: Container) -> None:
        self._container = container

    def __call__(self, *args: str) -> Result:
        return CliRunner().invoke(main, list(args), obj=self._container, catch_exceptions=False)

    def json(self, *args: str, exit_code: int = 0) -> Any:
        result = self(*args, "--json")
        assert result.exit_code == exit_code, (result.exit_code, result.stdout, result.stderr)
        return json.loads(result.stdout)


@pytest.fixture
def cli(container: Container) -> Cli:
    return Cli(container)


def subscribe_customers(
    fake_stripe: FakeStripe, count: int, *, granting: Callable[[int], bool] = lambda n: True
) -> list[dict[str, Any]]:
    """Customers cus_0000... subscribe in Stripe, those `granting` picks to a plan with api_access (feat_api).
    Returns the events Stripe recorded, oldest first: a subscription.created, and a summary when access changed."""
    api = fake_stripe.create_feature("api_access", feature_id="feat_api")
    with_api, without = fake_stripe.create_product([api]), fake_stripe.create_product([])
    for n in range(count):
        fake_stripe.subscribe(f"cus_{n:04d}", [with_api if granting(n) else without])
    return fake_stripe.events.all()


def book_the_budget_an_hour_ahead(client: redis.Redis, key: str, limit: int = 100) -> float:
    """Fill a Stripe budget's log (up to `limit` a window) an hour ahead, as busy workers would: from then on
    each request takes a moment after theirs, wherever the clock is. Returns the moment booked (Redis's clock)."""
    seconds, micros = client.time()
    booked = float(seconds + micros / 1e6 + 3600)
    client.zadd(key, {f"booked:{n}": booked for n in range(limit)})
    return booked


@pytest.fixture
def driver_statements(container: Container) -> Iterator[list[str]]:
    """Every statement the container's pooled connections send while the test runs, counted at the driver
    (PostgreSQL): SQLAlchemy's own and those the worker sends through psycopg itself (`db.driver_rows_together`)."""
    import psycopg
    from sqlalchemy import event as sa_event

    statements: list[str] = []

    class CountingCursor(psycopg.Cursor):  # type: ignore[type-arg]
        def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            text = query.decode() if isinstance(query, bytes) else str(query)
            # Sent with the first and the last statements (`db.driver_rows_together`): no work of their own.
            if text not in ("BEGIN", "COMMIT"):
                statements.append(text)
            return super().execute(query, params, **kwargs)

    def counting(dbapi_connection: Any, *_: Any) -> None:
        dbapi_connection.cursor_factory = CountingCursor

    def plain(dbapi_connection: Any, *_: Any) -> None:
        dbapi_connection.cursor_factory = psycopg.Cursor

    sa_event.listen(container.engine.pool, "checkout", counting)
    sa_event.listen(container.engine.pool, "checkin", plain)
    try:
        yield statements
    finally:
        sa_event.remove(container.engine.pool, "checkout", counting)
        sa_event.remove(container.engine.pool, "checkin", plain)


@pytest.fixture
def driver_round_trips(container: Container, tmp_path: Path) -> Iterator[Callable[[], list[str]]]:
    """`round_trips_of` the container's engine while the test runs."""
    with round_trips_of(container.engine, tmp_path) as round_trips:
        yield round_trips


@contextmanager
def round_trips_of(engine: Engine, trace_dir: Path) -> Iterator[Callable[[], list[str]]]:
    """The round trips the engine's pooled connections make to PostgreSQL meanwhile, in the order they began,
    read off libpq's own trace of the protocol: on one connection, a run of messages to the server, then the
    server's answers, is one. Each is named by the statements it sent (the first 60 characters of each, joined
    by " | "). A connection's trace is complete once it is back in the pool (libpq flushes it then)."""
    import psycopg.pq
    from sqlalchemy import event as sa_event

    opened: list[Any] = []

    def tracing(dbapi_connection: Any, *_: Any) -> None:
        trace = (trace_dir / f"libpq-{len(opened)}.trace").open("w")  # one a checkout: traces never interleave
        opened.append(trace)
        dbapi_connection.pgconn.trace(trace.fileno())
        dbapi_connection.pgconn.set_trace_flags(psycopg.pq.Trace.REGRESS_MODE)

    def untraced(dbapi_connection: Any, *_: Any) -> None:
        dbapi_connection.pgconn.untrace()

    def round_trips() -> list[str]:
        trips: list[tuple[str, list[str]]] = []  # (when the first message went, the statements sent)
        for trace in opened:
            if not trace.closed:
                trace.flush()
            sending = False
            for line in Path(trace.name).read_text().splitlines():
                at, direction, _, kind, *rest = line.split("\t") + [""]
                if direction == "F" and not sending:
                    trips.append((at, []))
                sending = direction == "F"
                if sending and kind in ("Query", "Parse"):  # Parse: "name" "text" ...; Query: "text"
                    trips[-1][1].append(" ".join(rest).split('"')[3 if kind == "Parse" else 1][:60])
        return [" | ".join(statements) for _, statements in sorted(trips, key=lambda trip: trip[0])]

    sa_event.listen(engine.pool, "checkout", tracing)
    sa_event.listen(engine.pool, "checkin", untraced)
    try:
        yield round_trips
    finally:
        sa_event.remove(engine.pool, "checkout", tracing)
        sa_event.remove(engine.pool, "checkin", untraced)
        for trace in opened:
            trace.close()
