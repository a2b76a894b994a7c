"""Receiver: wrk with pre-signed unique summary events at c16 and c64, `serve` vs the bare Flask reference.

Per side and rep: a fresh server, 1 s of warm-up, then the measured run. Commits per webhook are the
database's xact_commit delta over the server's whole life (stats flush as its backends exit) divided by the
webhooks it answered; CPU per webhook is the server processes' user + system time over the measured run.
"""

from __future__ import annotations

from typing import Any

from ..common import Config, ratio, side_by_side
from ..services import Stack, db_counters, reset_tables, scalar, settle
from ..wrk import signed_file, webhooks

KEYS = ["rps", "p50_ms", "p99_ms", "commits_per_webhook", "cpu_ms_per_webhook", "max_rss_mb", "non2xx"]


def one_run(side: str, cfg: Config, connections: int, seconds: float) -> dict[str, Any]:
    reset_tables(cfg)
    warm, main = signed_file(400, f"w{connections}"), signed_file(cfg.pick(12_000, 30_000), f"m{connections}")
    settle(cfg)
    before = db_counters(cfg)
    with Stack(side, cfg) as stack:
        web = stack.start_web()
        warmup = webhooks(stack.url, connections, 1, warm)
        web.start_sampling()
        cpu = web.cpu()
        figures = webhooks(stack.url, connections, seconds, main)
        cpu = web.cpu() - cpu
        rss = web.max_rss_mb()
    settle(cfg)
    after = db_counters(cfg)
    answered = warmup["requests"] + figures["requests"]
    table = "stripe_events" if side == "ours" else "bare_events"
    stored = scalar(cfg, f"SELECT count(*) FROM {table}")
    warm.unlink()
    main.unlink()
    return {
        **figures,
        "stored": stored,
        "answered": answered,
        "commits_per_webhook": round((after["commits"] - before["commits"]) / answered, 2),
        "cpu_ms_per_webhook": round(cpu * 1000 / figures["requests"], 2),
        "max_rss_mb": rss,
    }


def run(cfg: Config) -> dict[str, Any]:
    seconds = cfg.pick(5, 10)
    server = "ours: `serve --workers 2` with its default threads (gthread); bare: gunicorn, 2 sync workers"
    results: dict[str, Any] = {"seconds": seconds, "server": server}
    for connections in (16, 64):
        ours: list[dict[str, Any]] = []
        bare: list[dict[str, Any]] = []
        for _ in range(cfg.reps):
            ours.append(one_run("ours", cfg, connections, seconds))
            bare.append(one_run("bare", cfg, connections, seconds))
        summary = side_by_side(ours, bare, KEYS)
        summary["ratio"] = ratio(summary["ours"]["rps"], summary["bare"]["rps"])
        results[f"c{connections}"] = summary
        print(f"  receiver c{connections}: ours {summary['ours']}  bare {summary['bare']}  ratio {summary['ratio']}")
    return results
