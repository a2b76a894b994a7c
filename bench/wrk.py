"""Running wrk (Debian package `wrk`) and reading the one JSON line its Lua `done()` prints."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from entitlement_sync.testing import sign

from .common import SECRET
from .stripe import summary_body

HERE = Path(__file__).resolve().parent
THREADS = 2


def require_wrk() -> str:
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk is needed for this part: apt-get install wrk")
    return found


def signed_file(count: int, prefix: str) -> Path:
    """`count` unique summary events for as many customers, each signed now (Stripe allows 300 s)."""
    path = Path(tempfile.mkstemp(prefix="es-bench-", suffix=".tsv")[1])
    with path.open("wb") as out:
        for n in range(count):
            body = summary_body(f"cus_{prefix}{n}")
            out.write(sign(body, SECRET).encode() + b"\t" + body + b"\n")
    return path


def run(script: str, url: str, connections: int, seconds: float, *args: str) -> dict[str, Any]:
    command = [require_wrk(), "-t", str(THREADS), "-c", str(connections), "-d", f"{seconds:g}s", "--timeout", "10s"]
    command += ["-s", str(HERE / script), url, "--", *args]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=True)
    line = next(line for line in finished.stdout.splitlines() if line.startswith("{"))
    figures: dict[str, Any] = json.loads(line)
    seconds_run = figures["duration_us"] / 1e6
    figures["rps"] = round(figures["requests"] / seconds_run, 1)
    figures["p50_ms"] = round(figures.pop("p50_us") / 1000, 2)
    figures["p99_ms"] = round(figures.pop("p99_us") / 1000, 2)
    return figures


def webhooks(url: str, connections: int, seconds: float, deliveries: Path) -> dict[str, Any]:
    return run("wrk_webhooks.lua", url, connections, seconds, str(deliveries), str(THREADS))
