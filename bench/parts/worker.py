"""Worker drain: N events for distinct customers, pre-stored and enqueued, then 2 processes x 8 threads drain
them; Stripe answers in 50 ms, pacing off. Ours (`entitlement-sync worker`) vs a bare Dramatiq actor.

The events say `has_more: true`, so ours fetches each one as the bare actor does (one GET, one replace): this is
the fetch path's cost. A complete payload is written without a call (`burst` measures that path); subscription
events, the fetch path's usual cause, are `worker_subscriptions`.

Rates are taken from the first progress seen to the last event (process start-up is left out); commits and new
PostgreSQL sessions are pg_stat_database deltas over the worker's whole life, less the bench's own polls.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker

from entitlement_sync.bootstrap import bootstrap
from entitlement_sync.events import parse_event
from entitlement_sync.settings import Settings

from ..common import Config, ratio, side_by_side
from ..procs import MachineCpu
from ..services import Stack, db_counters, reset_tables, settle
from ..stripe import grant, simulator, summary_body

Body = Callable[[str], bytes]

KEYS = [
    "events_per_s",
    "commits_per_event",
    "cpu_ms_per_event",
    "new_connections",
    "max_rss_mb",
    "seconds",
    "thread_ms_per_event",
    "pg_cpu_ms_per_event",
    "idle_share",
]
PROCESSES, THREADS = 2, 8
DONE = {
    "ours": "SELECT count(*) FROM stripe_events WHERE status = 'processed'",
    "bare": "SELECT count(DISTINCT customer_id) FROM bare_entitlements",
}


def signal(customer: str) -> bytes:
    """This part's event: a summary that says Stripe holds more than it shows, so ours fetches."""
    return summary_body(customer, complete=False)


def prestore(stack: Stack, customers: list[str], body: Body = signal) -> None:
    if stack.side == "ours":
        container = bootstrap(Settings.from_env(stack.env))
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda c: container.receiver.accept_event(parse_event(body(c))), customers))
        container.broker.close()
        container.close()
        return
    broker = RedisBroker(url=stack.cfg.redis_url, namespace=stack.namespace)
    broker.declare_queue("bare")
    with psycopg.connect(stack.cfg.dsn) as db, db.cursor() as cursor:
        rows = []
        for customer in customers:
            event = json.loads(body(customer))
            rows.append((event["id"], event["type"], customer, json.dumps(event)))
        cursor.executemany("INSERT INTO bare_events (id, type, customer_id, payload) VALUES (%s, %s, %s, %s)", rows)
    for customer in customers:
        broker.enqueue(Message(queue_name="bare", actor_name="bare_sync", args=(customer,), kwargs={}, options={}))
    broker.close()


def drain(stack: Stack, total: int, timeout: float) -> dict[str, Any]:
    worker = stack.start_worker(processes=PROCESSES, threads=THREADS)
    worker.start_sampling()
    polls, first = 0, None
    with psycopg.connect(stack.cfg.dsn, autocommit=True) as db:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = db.execute(DONE[stack.side]).fetchone()[0]  # type: ignore[index]
            polls += 1
            if done and first is None:
                first, machine = (time.monotonic(), done, worker.cpu()), MachineCpu()
            if done >= total:
                break
            time.sleep(0.1)
    ended, cpu = time.monotonic(), worker.cpu()
    assert first is not None, worker.tail()
    postgres, idle = MachineCpu().since(machine)
    drained = done - first[1]
    rate = drained / (ended - first[0])
    return {
        "done": done,
        "seconds": round(ended - first[0], 2),
        "events_per_s": round(rate, 1),
        "cpu_ms_per_event": round((cpu - first[2]) * 1000 / max(drained, 1), 2),
        # Little's law: every thread busy, so each event took this long in one (the GET's 50 ms included).
        "thread_ms_per_event": round(PROCESSES * THREADS * 1000 / max(rate, 1e-9), 1),
        "pg_cpu_ms_per_event": None if postgres is None else round(postgres * 1000 / max(drained, 1), 2),
        "idle_share": round(idle, 3),
        "max_rss_mb": worker.max_rss_mb(),
        "polls": polls,
    }


def one_run(side: str, cfg: Config, stripe_url: str, customers: list[str], body: Body = signal) -> dict[str, Any]:
    reset_tables(cfg)
    with Stack(side, cfg, stripe_url) as stack:
        prestore(stack, customers, body)
        settle(cfg)
        before = db_counters(cfg)
        figures = drain(stack, len(customers), timeout=cfg.pick(90, 240))
        stack.stop()
    settle(cfg)
    after = db_counters(cfg)
    commits = after["commits"] - before["commits"] - figures["polls"]
    return {
        **figures,
        "commits_per_event": round(commits / figures["done"], 2),
        "new_connections": after["sessions"] - before["sessions"] - 2,  # less the poller's and settle's own
    }


def run(cfg: Config, body: Body = signal, name: str = "worker") -> dict[str, Any]:
    events = cfg.size(1_000, 5_000)
    server = simulator(latency=0.05)
    customers = [f"cus_drain{n}" for n in range(events)]
    grant(server.stripe, customers)
    ours: list[dict[str, Any]] = []
    bare: list[dict[str, Any]] = []
    try:
        for _ in range(cfg.reps):
            ours.append(one_run("ours", cfg, server.url, customers, body))
            bare.append(one_run("bare", cfg, server.url, customers, body))
    finally:
        server.stop()
    summary = side_by_side(ours, bare, KEYS)
    summary.update(events=events, workers=f"{PROCESSES} processes x {THREADS} threads", stripe_latency_ms=50)
    summary["ratio"] = ratio(summary["ours"]["events_per_s"], summary["bare"]["events_per_s"])
    summary["cpu_ratio"] = ratio(summary["ours"]["cpu_ms_per_event"], summary["bare"]["cpu_ms_per_event"])
    print(f"  {name}: ours {summary['ours']}  bare {summary['bare']}  ratio {summary['ratio']}")
    return summary
