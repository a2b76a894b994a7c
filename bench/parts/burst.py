"""The burst: N complete summary events for N customers posted at once, the default Stripe budget (20/s).

Time from the first post until every customer's rows are in the table, and the most calls to Stripe in any
one-second window (sliding). The bare reference fetches every event too, spaced at the same budget.
"""

from __future__ import annotations

import time
from typing import Any

from ..common import Config, max_in_window, ratio, wait_for
from ..services import Stack, reset_tables, scalar
from ..stripe import Poster, grant, simulator, summary_body

BUDGET = 20
TABLE = {"ours": "entitlements", "bare": "bare_entitlements"}


def one_run(side: str, cfg: Config, events: int) -> dict[str, Any]:
    reset_tables(cfg)
    server = simulator(latency=0.05)
    customers = [f"cus_burst{n}" for n in range(events)]
    grant(server.stripe, customers)
    pacing = {"STRIPE_MAX_REQUESTS_PER_SECOND": str(BUDGET), "BARE_STRIPE_RATE": str(BUDGET)}
    try:
        with Stack(side, cfg, server.url, **pacing) as stack:
            stack.start_web()
            stack.start_worker(processes=2, threads=8)
            stack.wait_ready(server.stripe)
            server.stripe.call_times.clear()
            started = time.monotonic()
            Poster(stack.url).post_all([summary_body(c) for c in customers])
            posted = time.monotonic() - started

            def all_applied() -> bool:
                return bool(
                    scalar(
                        cfg,
                        f"SELECT count(DISTINCT customer_id) FROM {TABLE[side]} WHERE customer_id LIKE 'cus_burst%'",
                    )
                    >= events
                )

            finished = wait_for(all_applied, events / BUDGET * 2 + 30, 0.1)
            elapsed = time.monotonic() - started
            calls = server.stripe.entitlement_call_times()
    finally:
        server.stop()
    return {
        "all_applied": finished,
        "seconds": round(elapsed, 2),
        "posting_s": round(posted, 2),
        "calls": len(calls),
        "calls_per_event": round(len(calls) / events, 2),
        "max_calls_in_1s": max_in_window(calls),
    }


def run(cfg: Config) -> dict[str, Any]:
    """One run per side (each is long), ours first."""
    events = cfg.size(200, 1_000)
    ours = one_run("ours", cfg, events)
    print(f"  burst ours {ours}", flush=True)
    bare = one_run("bare", cfg, events)
    print(f"  burst bare {bare}", flush=True)
    return {
        "events": events,
        "budget_per_s": BUDGET,
        "fetch_only_bound_s": events / BUDGET,
        "ours": ours,
        "bare": bare,
        "ratio": ratio(bare["seconds"], ours["seconds"]),  # > 1: ours is faster
    }
