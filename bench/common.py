"""What every part shares: where the services are, the machine it ran on, results as JSON, small statistics."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import redis

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/entitlement_sync_bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
API_KEY = "sk_test_bench"
# These parts are long at their size: one run per side, ours first, whatever BENCH_REPS says.
ONE_RUN_PER_SIDE = ("freshness", "freshness_fetched", "burst", "coalescing", "reconcile")
SECRET = "whsec_bench"
READ_TOKEN = "bench-read-token"


@dataclass(frozen=True)
class Config:
    database_url: str  # SQLAlchemy form (postgresql+psycopg://); its tables are emptied between reps
    redis_url: str
    quick: bool
    reps: int
    scale: float = 1.0  # BENCH_SCALE: shrinks every part's size (the smoke test runs at 0.05)

    @property
    def dsn(self) -> str:
        """The same database for psycopg, which takes no `+driver`."""
        return self.database_url.replace("postgresql+psycopg://", "postgresql://")

    def pick(self, quick: Any, full: Any) -> Any:
        return quick if self.quick else full

    def size(self, quick: int, full: int) -> int:
        return max(2, int(self.pick(quick, full) * self.scale))


def config(quick: bool) -> Config:
    return Config(
        database_url=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL),
        redis_url=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL),
        quick=quick,
        reps=int(os.environ.get("BENCH_REPS", "1" if quick else "2")),
        scale=float(os.environ.get("BENCH_SCALE", "1")),
    )


def ensure_database(cfg: Config) -> None:
    """Create the bench database if it is missing (never any other), then migrate it."""
    from entitlement_sync.db import upgrade

    base, _, name = cfg.dsn.rpartition("/")
    with psycopg.connect(f"{base}/postgres", autocommit=True) as connection:
        if not connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            connection.execute(f'CREATE DATABASE "{name}"')
    upgrade(cfg.database_url)


def machine(cfg: Config) -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    with psycopg.connect(cfg.dsn) as connection:
        postgres = connection.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
    redis_version = redis.Redis.from_url(cfg.redis_url).info("server")["redis_version"]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "postgresql": postgres,
        "redis": redis_version,
        "commit": commit.stdout.strip(),
        # Others share this machine: a load far above nproc means absolute figures are low, ratios still hold.
        "loadavg_1m_at_end": round(os.getloadavg()[0], 1),
    }


def write_result(part: str, cfg: Config, figures: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{part}{'-quick' if cfg.quick else ''}.json"
    document = {"part": part, "quick": cfg.quick, "reps": cfg.reps, "machine": machine(cfg), **figures}
    if part in ONE_RUN_PER_SIDE:
        document["reps"] = 1
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def percentile(values: Sequence[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio(ours: float, bare: float) -> float:
    return round(ours / bare, 2) if bare else float("nan")


def max_in_window(times: Sequence[float], window: float = 1.0) -> int:
    """The most events in any `window`-second span (sliding, not aligned to clock seconds)."""
    ordered, best, start = sorted(times), 0, 0
    for end, moment in enumerate(ordered):
        while moment - ordered[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def wait_for(condition: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def side_by_side(ours: list[dict[str, Any]], bare: list[dict[str, Any]], keys: Sequence[str]) -> dict[str, Any]:
    """Median over reps of each figure, for both sides."""
    return {
        "ours": {key: _median_of(ours, key) for key in keys},
        "bare": {key: _median_of(bare, key) for key in keys},
        "runs": {"ours": ours, "bare": bare},
    }


def _median_of(reps: list[dict[str, Any]], key: str) -> float | None:
    """None when no rep has the figure (PostgreSQL's CPU, say, when the server runs on another machine)."""
    values = [rep[key] for rep in reps if rep.get(key) is not None]
    return round(median(values), 3) if values else None
