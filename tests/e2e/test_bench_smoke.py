"""The benchmark suite cannot rot silently: one tiny part (reconcile: no wrk needed) runs end to end, ours
beside the bare reference, and its figures render into the report's table. Not a benchmark: no timings checked.
"""

from __future__ import annotations

import psycopg
import pytest
from bench.common import Config
from bench.parts import reconcile
from bench.report import reconcile as reconcile_rows

from tests.conftest import TEST_DATABASE_URL, TEST_REDIS_URL

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not (TEST_DATABASE_URL or "").startswith("postgresql") or not TEST_REDIS_URL,
        reason="needs TEST_DATABASE_URL (PostgreSQL) and TEST_REDIS_URL",
    ),
]


def test_the_reconcile_part_runs_beside_its_bare_reference_and_renders() -> None:
    cfg = Config(database_url=TEST_DATABASE_URL or "", redis_url=TEST_REDIS_URL or "", quick=True, reps=1, scale=0.1)
    try:
        figures = reconcile.run(cfg)
    finally:
        with psycopg.connect(cfg.dsn, autocommit=True) as db:  # the bare tables are the bench's, not the schema's
            db.execute("DROP TABLE IF EXISTS bare_events, bare_entitlements")
    assert figures["ours"]["fetches"] == figures["ours"]["customers"] == 6
    assert figures["bare"]["fetches"] == 6
    assert "sync all --rate 20" in reconcile_rows(figures)[0]
