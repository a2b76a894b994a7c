"""Feed: how long a change takes from its COMMIT to a consumer long-polling `GET /v1/access-changes` on the
internal port of `serve` (gunicorn), beside a bare LISTEN loop receiving a NOTIFY sent by an INSERT's
transaction (bench/reference/bare_feed.py); and `AccessClient.has_access` (100,000 customers x 5 keys in
its copy) beside a bare dict lookup. Alternating reps.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import requests

from entitlement_sync.bootstrap import bootstrap
from entitlement_sync.client import AccessClient
from entitlement_sync.settings import Settings
from entitlement_sync.tasks import build_stub_broker

from ..common import API_KEY, READ_TOKEN, SECRET, Config, median, percentile, ratio, wait_for
from ..procs import free_port
from ..reference.bare_feed import SCHEMA, BareListener, write
from ..services import Stack, reset_tables

CUSTOMERS, KEYS = 100_000, 5
LATER_DAYS = 30


class Consumer:
    """Long polls from the service's feed; records when each change's cause arrived (perf_counter)."""

    def __init__(self, internal_url: str) -> None:
        self.received: dict[str, float] = {}
        self._http = requests.Session()
        self._http.headers["Authorization"] = f"Bearer {READ_TOKEN}"
        self._url, self._stopping = internal_url, threading.Event()
        self._cursor = self._get("/v1/access-snapshot", limit=1)["cursor"]
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _get(self, path: str, **params: Any) -> Any:
        return self._http.get(f"{self._url}{path}", params=params, timeout=40).json()

    def _run(self) -> None:
        while not self._stopping.is_set():
            page = self._get("/v1/access-changes", after=self._cursor, limit=100, wait=25)
            arrived = time.perf_counter()
            for change in page["changes"]:
                self.received[change["cause"]] = arrived
            self._cursor = page["next_cursor"]

    def stop(self) -> None:
        self._stopping.set()


def feed_latency(cfg: Config, samples: int) -> list[float]:
    """ms from the writer's COMMIT returning to the consumer holding the change."""
    settings = replace(
        Settings.from_env(),
        stripe_api_key=API_KEY,
        webhook_secrets=(SECRET,),
        database_url=cfg.database_url,
        redis_url="",
        access_api_tokens=(READ_TOKEN,),
    )
    container = bootstrap(settings, broker=build_stub_broker())
    internal = free_port()
    latencies: list[float] = []
    with Stack("ours", cfg) as stack:
        stack.start_web(workers=2, internal_port=internal)
        consumer = Consumer(f"http://127.0.0.1:{internal}")
        rng = random.Random(7)
        until = datetime.now(UTC) + timedelta(days=LATER_DAYS)
        for n in range(samples):
            time.sleep(rng.uniform(0.02, 0.05))  # the consumer is back in its long poll
            customer = f"cus_feed_{n % 50}"
            record = container.overrides.grant(customer, "api_access", until, "bench", "bench")
            committed = time.perf_counter()
            cause = f"override:{record.id}"
            if wait_for(lambda cause=cause: cause in consumer.received, 10, 0.0005):
                latencies.append((consumer.received[cause] - committed) * 1000)
            container.overrides.revoke(record.id, "bench")
        consumer.stop()
    container.close()
    return latencies


def bare_latency(cfg: Config, samples: int) -> list[float]:
    latencies: list[float] = []
    with psycopg.connect(cfg.dsn, autocommit=True) as connection:
        connection.execute(SCHEMA)
        listener = BareListener(cfg.dsn)
        rng = random.Random(7)
        for n in range(samples):
            time.sleep(rng.uniform(0.02, 0.05))
            token = f"t{n}"
            write(connection, f"cus_feed_{n % 50}", True, token)
            committed = time.perf_counter()
            if wait_for(lambda token=token: token in listener.received, 10, 0.0005):
                latencies.append((listener.received[token] - committed) * 1000)
        listener.stop()
        connection.execute("DROP TABLE IF EXISTS bare_feed")
    return latencies


class LoadedCopy:
    """A transport that serves one snapshot page of CUSTOMERS x KEYS, then an empty feed."""

    def get(self, path: str, params: dict[str, Any], timeout: float) -> tuple[int, Any]:
        if path.endswith("snapshot"):
            rows = [
                {"customer": f"cus_{c}", "lookup_key": f"feature_{k}", "granted": (c + k) % 3 != 0}
                for c in range(CUSTOMERS)
                for k in range(KEYS)
            ]
            return 200, {"cursor": 0, "access": rows, "next_after_customer": None}
        return 200, {"changes": [], "next_cursor": 0}

    def close(self) -> None:
        pass


def lookups(samples: int, reps: int) -> dict[str, Any]:
    client = AccessClient("http://unused", "t", transport=LoadedCopy(), start=False, page_size=CUSTOMERS)
    client.poll_once()
    bare = {(f"cus_{c}", f"feature_{k}"): (c + k) % 3 != 0 for c in range(CUSTOMERS) for k in range(KEYS)}
    rng = random.Random(3)
    asks = [(f"cus_{rng.randrange(CUSTOMERS + 1000)}", f"feature_{rng.randrange(KEYS + 2)}") for _ in range(samples)]
    per_call: dict[str, list[float]] = {"ours": [], "bare": []}
    batch: dict[str, list[float]] = {"ours": [], "bare": []}
    calls = {"ours": client.has_access, "bare": lambda c, k: bare.get((c, k), False)}
    for rep in range(reps * 2):
        side = "ours" if rep % 2 == 0 else "bare"
        call = calls[side]
        for customer, key in asks:
            started = time.perf_counter_ns()
            call(customer, key)
            per_call[side].append((time.perf_counter_ns() - started) / 1000)
        started = time.perf_counter_ns()
        for customer, key in asks:
            call(customer, key)
        batch[side].append((time.perf_counter_ns() - started) / len(asks) / 1000)
    figures: dict[str, Any] = {
        side: {
            "p50_us": round(median(per_call[side]), 3),
            "p99_us": round(percentile(per_call[side], 0.99), 3),
            "mean_in_a_loop_us": round(median(batch[side]), 3),
        }
        for side in ("ours", "bare")
    }
    figures["ratio_p50"] = ratio(figures["ours"]["p50_us"], figures["bare"]["p50_us"])
    figures["ratio_loop"] = ratio(figures["ours"]["mean_in_a_loop_us"], figures["bare"]["mean_in_a_loop_us"])
    return figures


def run(cfg: Config) -> dict[str, Any]:
    samples = cfg.size(100, 500)
    reset_tables(cfg)
    ours: list[float] = []
    bare: list[float] = []
    for _ in range(cfg.reps):  # alternating sides
        ours += feed_latency(cfg, samples)
        bare += bare_latency(cfg, samples)
    latency: dict[str, Any] = {
        side: {
            "samples": len(values),
            "p50_ms": round(median(values), 2),
            "p99_ms": round(percentile(values, 0.99), 2),
        }
        for side, values in (("ours", ours), ("bare", bare))
    }
    latency["ratio_p50"] = ratio(latency["ours"]["p50_ms"], latency["bare"]["p50_ms"])
    figures = {"feed_latency": latency, "has_access": lookups(cfg.pick(50_000, 200_000), cfg.reps)}
    print(f"  feed {figures}", flush=True)
    return figures
