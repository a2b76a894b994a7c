"""gunicorn server hooks, loaded by `entitlement-sync serve` (`--config python:entitlement_sync.gunicorn_hooks`)."""

from __future__ import annotations

from typing import Any

from .telemetry import process_exited


def child_exit(server: Any, worker: Any) -> None:
    # A replaced web process's live gauges (the breaker state) must not outlive it; its counters stay.
    process_exited(worker.pid)
