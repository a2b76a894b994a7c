"""The benchmark suite cannot rot silently: two tiny parts (reconcile, and the worker drain; no wrk needed) run end
to end, ours beside the bare reference, and their figures render into the report's table. Not a benchmark: no
timings checked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from bench.common import Config
from bench.parts import reconcile, worker
from bench.report import reconcile as reconcile_rows
from bench.report import worker as worker_rows
from sqlalchemy import make_url

from tests.conftest import TEST_DATABASE_URL, TEST_REDIS_URL

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not (TEST_DATABASE_URL or "").startswith("postgresql") or not TEST_REDIS_URL,
        reason="needs TEST_DATABASE_URL (PostgreSQL) and TEST_REDIS_URL",
    ),
]


def _run_tiny(part: Callable[[Config], dict[str, Any]], database_url: str, scale: float) -> dict[str, Any]:
    """A part at `scale` on the tests' database, migrated by the `database_url` fixture (run alone, a part would
    otherwise find no schema); the bare tables it made are dropped after (they are the bench's, not the schema's)."""
    cfg = Config(database_url=database_url, redis_url=TEST_REDIS_URL or "", quick=True, reps=1, scale=scale)
    try:
        return part(cfg)
    finally:
        with psycopg.connect(cfg.dsn, autocommit=True) as db:
            db.execute("DROP TABLE IF EXISTS bare_events, bare_entitlements")


def test_the_reconcile_part_runs_beside_its_bare_reference_and_renders(database_url: str) -> None:
    figures = _run_tiny(reconcile.run, database_url, 0.1)
    assert figures["ours"]["fetches"] == figures["ours"]["customers"] == 6
    assert figures["bare"]["fetches"] == 6
    assert "sync all --rate 20" in reconcile_rows(figures)[0]


def test_the_worker_drain_says_where_the_machine_went_on_each_side(database_url: str) -> None:
    figures = _run_tiny(worker.run, database_url, 0.03)
    server_here = make_url(database_url).host in ("127.0.0.1", "localhost")  # CI's is
    for side in ("ours", "bare"):
        drained = figures[side]
        assert 0 <= drained["idle_share"] <= 1
        assert drained["thread_ms_per_event"] > 0
        if server_here:  # the server's own CPU, read from /proc; None only when it runs on another machine
            assert drained["pg_cpu_ms_per_event"] is not None and drained["pg_cpu_ms_per_event"] >= 0
    assert "ms in a thread per event" in worker_rows(figures)[0]
