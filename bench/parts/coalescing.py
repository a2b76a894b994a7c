"""Coalescing: checkout bursts of 3-5 events per customer (subscription created/updated and summary events,
back to back per customer, customers in parallel), pacing off, Stripe at 50 ms: calls to Stripe per event.
"""

from __future__ import annotations

import json
import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from entitlement_sync.testing import event, subscription

from ..common import Config, ratio, wait_for
from ..services import Stack, reset_tables, scalar
from ..stripe import Poster, grant, simulator, summary_body

TABLE = {"ours": "entitlements", "bare": "bare_entitlements"}


def checkout(customer: str, size: int) -> list[bytes]:
    """A checkout as Stripe tells it: the subscription created, the summary, then updates."""
    sub = subscription(f"sub_{customer}", customer, prices=[("price_bench", "prod_bench")])
    created = json.dumps(event("customer.subscription.created", sub)).encode()
    updated = json.dumps(event("customer.subscription.updated", sub, previous_attributes={})).encode()
    story = [created, summary_body(customer), updated, summary_body(customer), updated]
    return story[:size]


def one_run(side: str, cfg: Config, bursts: dict[str, list[bytes]]) -> dict[str, Any]:
    reset_tables(cfg)
    server = simulator(latency=0.05)
    grant(server.stripe, bursts)
    try:
        with Stack(side, cfg, server.url) as stack:
            stack.start_web()
            stack.start_worker(processes=2, threads=8)
            stack.wait_ready(server.stripe)
            server.stripe.call_times.clear()
            poster = Poster(stack.url)
            with ThreadPoolExecutor(16) as pool:
                list(pool.map(lambda story: [poster.post(body) for body in story], bursts.values()))
            table = TABLE[side]
            wait_for(
                lambda: (
                    scalar(cfg, f"SELECT count(DISTINCT customer_id) FROM {table} WHERE customer_id LIKE 'cus_co%'")
                    >= len(bursts)
                ),
                60,
            )
            calls = server.stripe.entitlement_call_times
            wait_for(lambda: (n := len(calls())) == (time.sleep(1.0) or len(calls())) and n > 0, 30, 0)
            total = len(calls())
    finally:
        server.stop()
    events = sum(len(story) for story in bursts.values())
    return {"events": events, "customers": len(bursts), "calls": total, "calls_per_event": round(total / events, 3)}


def run(cfg: Config) -> dict[str, Any]:
    """One run per side (each is long), ours first."""
    rng = random.Random(9)
    bursts = {f"cus_co{n}": checkout(f"cus_co{n}", rng.randint(3, 5)) for n in range(cfg.size(60, 200))}
    ours, bare = one_run("ours", cfg, bursts), one_run("bare", cfg, bursts)
    print(f"  coalescing ours {ours}  bare {bare}", flush=True)
    return {"ours": ours, "bare": bare, "ratio": ratio(bare["calls_per_event"], ours["calls_per_event"])}
