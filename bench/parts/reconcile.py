"""Reconcile at the rate bound: `entitlement-sync sync all --rate N` over N-rate-seconds of customers, Stripe at
50 ms; the achieved rate of entitlement fetches against N, and the most calls in any one-second window.
The bare reference is a loop in this process: list the subscriptions, then per customer a spaced GET and one
replace transaction.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import psycopg
import requests

from ..common import API_KEY, Config, max_in_window, ratio
from ..services import Stack, reset_tables
from ..stripe import FEATURES, simulator

RATE = 20


def achieved(times: list[float]) -> float:
    return round((len(times) - 1) / (max(times) - min(times)), 2) if len(times) > 1 else 0.0


def bare_sync_all(cfg: Config, stripe_url: str, rate: float) -> None:
    http, headers = requests.Session(), {"Authorization": f"Bearer {API_KEY}"}
    customers, after = set(), None
    while True:
        params = {"status": "all", "limit": 100, **({"starting_after": after} if after else {})}
        page = http.get(f"{stripe_url}/v1/subscriptions", params=params, headers=headers, timeout=5).json()
        customers |= {item["customer"] for item in page["data"]}
        if not page["has_more"]:
            break
        after = page["data"][-1]["id"]
    next_slot = time.monotonic()
    with psycopg.connect(cfg.dsn) as db:
        for customer in sorted(customers):
            time.sleep(max(0.0, next_slot - time.monotonic()))
            next_slot = max(next_slot + 1 / rate, time.monotonic())
            params = {"customer": customer, "limit": 100}
            answer = http.get(f"{stripe_url}/v1/entitlements/active_entitlements", params=params, headers=headers)
            rows = [(customer, e["feature"], e["lookup_key"], e["id"]) for e in answer.json()["data"]]
            with db.transaction():
                db.execute("DELETE FROM bare_entitlements WHERE customer_id = %s", (customer,))
                db.cursor().executemany("INSERT INTO bare_entitlements VALUES (%s, %s, %s, %s)", rows)


def one_run(side: str, cfg: Config, customers: int) -> dict[str, Any]:
    reset_tables(cfg)
    server = simulator(latency=0.05)
    stripe = server.stripe
    product = stripe.create_product([stripe.create_feature(key, feature_id=f) for f, key in FEATURES])
    for n in range(customers):
        stripe.subscribe(f"cus_rec{n:05d}", [product])
    started = time.monotonic()
    try:
        with Stack(side, cfg, server.url) as stack:
            if side == "ours":
                command = [sys.executable, "-m", "entitlement_sync.cli", "sync", "all", "--rate", str(RATE)]
                subprocess.run(command, env={**os.environ, **stack.env}, check=True, capture_output=True, timeout=600)
            else:
                bare_sync_all(cfg, server.url, RATE)
    finally:
        server.stop()
    fetches = stripe.entitlement_call_times()
    return {
        "customers": customers,
        "seconds": round(time.monotonic() - started, 2),
        "fetches": len(fetches),
        "achieved_per_s": achieved(fetches),
        "max_calls_in_1s": max_in_window([moment for moment, _ in stripe.call_times]),
    }


def run(cfg: Config) -> dict[str, Any]:
    """One run per side (each is long), ours first."""
    customers = cfg.size(60, 200)
    ours, bare = one_run("ours", cfg, customers), one_run("bare", cfg, customers)
    print(f"  reconcile ours {ours}  bare {bare}", flush=True)
    return {
        "rate": RATE,
        "stripe_latency_ms": 50,
        "ours": ours,
        "bare": bare,
        "ours_share_of_rate": round(ours["achieved_per_s"] / RATE, 2),
        "bare_share_of_rate": round(bare["achieved_per_s"] / RATE, 2),
        "ratio": ratio(ours["achieved_per_s"], bare["achieved_per_s"]),
    }
