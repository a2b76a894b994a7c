"""Reads: `AccessReader.has_access` in process on PostgreSQL (100,000 customers x 5 rows) and SQLite, beside
the same SELECT on a bare driver connection; and the HTTP read API (`serve`) vs a bare Flask handler running
the same SELECTs, both under gunicorn with 2 sync workers, wrk at c16.
"""

from __future__ import annotations

import random
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from entitlement_sync import AccessReader
from entitlement_sync.db import upgrade

from ..common import READ_TOKEN, Config, median, percentile, ratio, side_by_side
from ..services import Stack, reset_tables
from ..wrk import run as wrk_run

CUSTOMERS, FEATURES = 100_000, 5
# What `has_access` asks since effective access (issue 10): one primary-key lookup of the policy's answer.
ACCESS_TO = "SELECT granted FROM effective_access WHERE customer_id = {p} AND lookup_key = {p}"
POPULATE = """
WITH RECURSIVE c(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM c WHERE n < {last}),
f(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM f WHERE n < {features})
INSERT INTO entitlements (customer_id, feature_id, lookup_key, entitlement_id, granted_at)
SELECT 'cus_' || c.n, 'feat_' || f.n, 'feature_' || f.n, 'ent_' || c.n || '_' || f.n, CURRENT_TIMESTAMP FROM c, f;
INSERT INTO effective_access (customer_id, lookup_key, granted, reason, sources, since, computed_at)
SELECT customer_id, lookup_key, true, 'stripe_entitlement', '[]', granted_at, granted_at FROM entitlements;
WITH RECURSIVE c(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM c WHERE n < {last})
INSERT INTO customer_sync_state (customer_id, seq, applied_seq, synced_at)
SELECT 'cus_' || c.n, 1, 1, CURRENT_TIMESTAMP FROM c;
"""


def populate_postgres(cfg: Config) -> None:
    reset_tables(cfg)
    with psycopg.connect(cfg.dsn, autocommit=True) as db:
        for statement in POPULATE.format(last=CUSTOMERS - 1, features=FEATURES - 1).split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute("ANALYZE entitlements; ANALYZE effective_access; ANALYZE customer_sync_state")


def populate_sqlite() -> str:
    url = f"sqlite:///{Path(tempfile.mkdtemp(prefix='es-bench-')) / 'reads.db'}"
    upgrade(url)
    with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
        db.executescript(POPULATE.format(last=CUSTOMERS - 1, features=FEATURES - 1))
    return url


def timed(call: Callable[[str, str], Any], samples: int, seed: int) -> list[float]:
    rng, timings = random.Random(seed), []
    for _ in range(samples):
        customer, key = f"cus_{rng.randrange(CUSTOMERS)}", f"feature_{rng.randrange(FEATURES + 2)}"
        started = time.perf_counter()
        call(customer, key)
        timings.append((time.perf_counter() - started) * 1e6)
    return timings


def in_process(url: str, bare: Callable[[str, str], Any], samples: int, reps: int) -> dict[str, Any]:
    reader = AccessReader.connect(url)
    reader.has_access("cus_0", "feature_0")  # the pool's first connection is not a read's cost
    ours_t: list[float] = []
    bare_t: list[float] = []
    for rep in range(reps * 2):  # alternating halves
        (ours_t if rep % 2 == 0 else bare_t).extend(
            timed(reader.has_access if rep % 2 == 0 else bare, samples // reps, rep)
        )
    figures = {
        side: {"p50_us": round(median(t), 1), "p99_us": round(percentile(t, 0.99), 1)}
        for side, t in (("ours", ours_t), ("bare", bare_t))
    }
    figures["ratio_p50"] = ratio(figures["bare"]["p50_us"], figures["ours"]["p50_us"])
    return figures


def http(cfg: Config, seconds: float) -> dict[str, Any]:
    ours: list[dict[str, Any]] = []
    bare: list[dict[str, Any]] = []
    for _ in range(cfg.reps):
        for side, into in (("ours", ours), ("bare", bare)):
            with Stack(side, cfg) as stack:
                stack.start_web()
                wrk_run("wrk_reads.lua", stack.internal_url, 16, 1, str(CUSTOMERS), READ_TOKEN)
                into.append(wrk_run("wrk_reads.lua", stack.internal_url, 16, seconds, str(CUSTOMERS), READ_TOKEN))
    summary = side_by_side(ours, bare, ["rps", "p50_ms", "p99_ms", "non2xx"])
    summary["ratio"] = ratio(summary["ours"]["rps"], summary["bare"]["rps"])
    return summary


def run(cfg: Config) -> dict[str, Any]:
    samples = cfg.pick(4_000, 20_000)
    populate_postgres(cfg)
    with psycopg.connect(cfg.dsn, autocommit=True, prepare_threshold=0) as db:
        sql = ACCESS_TO.format(p="%s")
        postgres = in_process(cfg.database_url, lambda c, k: db.execute(sql, (c, k)).fetchone(), samples, cfg.reps)
    sqlite_url = populate_sqlite()
    with sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), check_same_thread=False) as lite:
        sql = ACCESS_TO.format(p="?")
        sqlite = in_process(sqlite_url, lambda c, k: lite.execute(sql, (c, k)).fetchone(), samples, cfg.reps)
    figures = {
        "customers": CUSTOMERS,
        "rows_per_customer": FEATURES,
        "samples": samples,
        "has_access_postgres": postgres,
        "has_access_sqlite": sqlite,
        "http": http(cfg, cfg.pick(5, 10)),
    }
    print(f"  reads {figures}", flush=True)
    return figures
