"""Steady-rate freshness, end to end (web + worker on the same cores, Stripe at 50 ms, pacing off).

A paced sender grants each new customer in the simulated Stripe and posts its summary event at its scheduled
time; freshness is the row's write time (set in the applying transaction, just before its commit) minus that
scheduled time. A rate is "flat" when every event was applied within the grace period and the last fifth's
median freshness is at most twice the first fifth's plus 0.25 s. The ladder stops at the first rate that is not.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg

from ..common import Config, median, percentile, wait_for
from ..services import Stack, reset_tables
from ..stripe import FEATURES, Poster, grant, simulator, summary_body

TABLE = {"ours": "entitlements", "bare": "bare_entitlements"}


def send_paced(
    stack: Stack, stripe: Any, prefix: str, rate: float, seconds: float, *, complete: bool = True
) -> dict[str, float]:
    poster, count = Poster(stack.url), int(rate * seconds)
    start = time.time() + 0.2
    scheduled: dict[str, float] = {}

    def send(n: int) -> None:
        customer, due = f"{prefix}{n}", start + n / rate
        time.sleep(max(0.0, due - time.time()))
        scheduled[customer] = due
        grant(stripe, [customer])
        poster.post(summary_body(customer, complete=complete))

    with ThreadPoolExecutor(64) as pool:
        list(pool.map(send, range(count)))
    return scheduled


def applied_at(stack: Stack, prefix: str) -> dict[str, float]:
    sql = f"SELECT customer_id, min(granted_at) FROM {TABLE[stack.side]} WHERE customer_id LIKE %s GROUP BY 1"
    with psycopg.connect(stack.cfg.dsn, autocommit=True) as db:
        return {customer: at.timestamp() for customer, at in db.execute(sql, (f"{prefix}%",)).fetchall()}


def one_rate(
    stack: Stack, stripe: Any, rate: float, seconds: float, grace: float, *, complete: bool = True
) -> dict[str, Any]:
    prefix = f"cus_fr{stack.side}{int(rate)}{'' if complete else 'f'}_"
    scheduled = send_paced(stack, stripe, prefix, rate, seconds, complete=complete)
    wait_for(lambda: len(applied_at(stack, prefix)) >= len(scheduled), grace, 0.25)
    applied = applied_at(stack, prefix)
    lags = [applied[c] - due for c, due in sorted(scheduled.items(), key=lambda item: item[1]) if c in applied]
    fifth = max(1, len(lags) // 5)
    first, last = median(lags[:fifth]), median(lags[-fifth:])
    missing = len(scheduled) - len(lags)
    return {
        "rate": rate,
        "sent": len(scheduled),
        "unapplied": missing,
        "p50_s": round(median(lags), 3),
        "p99_s": round(percentile(lags, 0.99), 3) if not missing else None,
        "first_fifth_median_s": round(first, 3),
        "last_fifth_median_s": round(last, 3),
        "flat": not missing and last <= 2 * first + 0.25,
    }


def ladder(
    side: str, cfg: Config, rates: list[float], seconds: float, *, complete: bool = True
) -> list[dict[str, Any]]:
    reset_tables(cfg)
    server = simulator(latency=0.05)
    results = []
    try:
        with Stack(side, cfg, server.url) as stack:
            stack.start_web()
            stack.start_worker(processes=2, threads=8)
            stack.wait_ready(server.stripe)
            for rate in rates:
                figures = one_rate(stack, server.stripe, rate, seconds, grace=cfg.pick(8, 15), complete=complete)
                results.append(figures)
                print(f"  freshness {side} {figures}", flush=True)
                if not figures["flat"]:
                    break
    finally:
        server.stop()
    return results


def run(cfg: Config) -> dict[str, Any]:
    """One run per side (each is long), ours first."""
    return both_ladders(cfg, complete=True)


def both_ladders(cfg: Config, *, complete: bool) -> dict[str, Any]:
    rates = cfg.pick([10, 20, 40, 80], [10, 25, 50, 100, 200])
    seconds = cfg.pick(4, 10)
    ours = ladder("ours", cfg, rates, seconds, complete=complete)
    bare = ladder("bare", cfg, rates, seconds, complete=complete)

    def sustained(runs: list[dict[str, Any]]) -> float:
        return max((r["rate"] for r in runs if r["flat"]), default=0)

    figures = {"seconds_per_rate": seconds, "features": len(FEATURES), "ours": ours, "bare": bare}
    figures["sustained"] = {"ours": sustained(ours), "bare": sustained(bare)}
    top = figures["sustained"]
    figures["ratio"] = round(top["ours"] / top["bare"], 2) if top["bare"] else None
    return figures
