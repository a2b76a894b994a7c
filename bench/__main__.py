"""`python -m bench run PART... [--quick]` and `python -m bench report`."""

from __future__ import annotations

import argparse
import importlib
import time

PARTS = [
    "receiver",
    "worker",
    "worker_subscriptions",
    "freshness",
    "freshness_fetched",
    "burst",
    "coalescing",
    "reconcile",
    "reads",
    "feed",
]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run parts and write bench/results/<part>[-quick].json")
    run.add_argument("parts", nargs="+", choices=[*PARTS, "all"])
    run.add_argument("--quick", action="store_true", help="smaller sizes and shorter runs (~5 min for all)")
    commands.add_parser("report", help="render docs/benchmarks.md and docs/benchmarks/*.png from the results")
    arguments = parser.parse_args()
    if arguments.command == "report":
        from .report import render

        print(f"wrote {render()}")
        return
    run_parts(PARTS if "all" in arguments.parts else arguments.parts, arguments.quick)


def run_parts(parts: list[str], quick: bool) -> None:
    from entitlement_sync.logs import configure_logging

    from .common import config, ensure_database, write_result

    configure_logging("WARNING")
    cfg = config(quick)
    ensure_database(cfg)
    for part in parts:
        started = time.monotonic()
        print(f"{part} ({'quick' if quick else 'full'}, {cfg.reps} rep(s) per side) ...", flush=True)
        module = importlib.import_module(f"bench.parts.{part}")
        figures = module.run(cfg)
        figures["elapsed_s"] = round(time.monotonic() - started, 1)
        print(f"  -> {write_result(part, cfg, figures)} in {figures['elapsed_s']} s", flush=True)


if __name__ == "__main__":
    main()
