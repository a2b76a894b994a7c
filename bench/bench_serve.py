"""Which gunicorn defaults (worker class, processes, threads) serve best on this 2-core machine, with and
without slow clients holding connections. Needs `wrk` (apt-get install wrk), PostgreSQL and Redis:

    python bench/bench_serve.py postgresql+psycopg://postgres@127.0.0.1:5432/test redis://127.0.0.1:6379/0

For each configuration: wrk (1 thread, 32 connections, 8 s) on the internal read API, then on the public
webhook (a signed, already stored event: verify, INSERT … ON CONFLICT, answer), then the webhook again while
16 clients trickle bodies (a byte a second). Everything talks to 127.0.0.1 only, and every run is bounded.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

from entitlement_sync.db import upgrade
from entitlement_sync.testing import active_entitlement, sign, summary_event

CONFIGS = [("sync", 2, 1), ("sync", 5, 1), ("gthread", 2, 4), ("gthread", 2, 8), ("gthread", 2, 16), ("gthread", 4, 4)]
SECRET, TOKEN = "whsec_bench", "bench-token"
SLOW_CLIENTS = 16


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start(config: tuple[str, int, int], environment: dict[str, str]) -> tuple[subprocess.Popen[bytes], int, int]:
    worker_class, workers, threads = config
    public, internal = free_port(), free_port()
    app = f"entitlement_sync.web.serving:serve_app(internal_port={internal})"
    command = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{public}", "--bind", f"127.0.0.1:{internal}"]
    command += ["--worker-class", worker_class, "--workers", str(workers), "--threads", str(threads), app]
    process = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            if requests.get(f"http://127.0.0.1:{internal}/healthz", timeout=1).ok:
                return process, public, internal
        except requests.RequestException:
            time.sleep(0.1)
    raise RuntimeError(f"gunicorn {config} did not start")


def wrk(url: str, script: Path | None = None) -> str:
    command = ["wrk", "-t1", "-c32", "-d8s", "--latency", "-H", f"Authorization: Bearer {TOKEN}", url]
    if script:
        command[1:1] = ["-s", str(script)]
    output = subprocess.run(command, capture_output=True, text=True, timeout=60).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p99 = re.search(r"99%\s+([\d.]+\w+)", output)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    timeouts = re.search(r"timeout (\d+)", output)
    summary = f"{float(rate[1]) if rate else 0:7.0f} req/s p99 {p99[1] if p99 else '-':>8}"
    summary += f" non-2xx {errors[1]}" if errors else ""
    return summary + (f" timeouts {timeouts[1]}" if timeouts and timeouts[1] != "0" else "")


def trickle(port: int, stop: threading.Event) -> None:
    head = b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
                connection.sendall(head)
                while not stop.wait(1.0):
                    connection.sendall(b"x")
        except OSError:
            stop.wait(0.2)  # cut off by the body deadline: come back, as an attacker would


def main() -> None:
    database_url, redis_url = sys.argv[1], sys.argv[2]
    upgrade(database_url)
    environment = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url, "STRIPE_API_KEY": "sk_test_b"}
    environment |= {"STRIPE_WEBHOOK_SECRETS": SECRET, "ACCESS_API_TOKENS": TOKEN, "REDIS_NAMESPACE": "es-bench"}
    body = json.dumps(summary_event("cus_bench", [active_entitlement("feat_api", "api_access")]))
    script = Path(tempfile.mkdtemp()) / "webhook.lua"
    # The signature is good for 5 minutes (Stripe's tolerance), longer than the whole run.
    headers = {"Stripe-Signature": sign(body, SECRET), "Content-Type": "application/json"}
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(body)}"]
    lines += [f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}" for name, value in headers.items()]
    script.write_text("\n".join(lines) + "\n")
    print(
        f"{'worker class, processes x threads':36} {'read API':34} {'webhook':34} webhook, {SLOW_CLIENTS} slow clients"
    )
    for config in CONFIGS:
        process, public, internal = start(config, environment)
        try:
            requests.post(f"http://127.0.0.1:{public}/webhooks/stripe", data=body, headers=headers, timeout=10)
            read = wrk(f"http://127.0.0.1:{internal}/v1/customers/cus_bench/entitlements")
            webhook = wrk(f"http://127.0.0.1:{public}/webhooks/stripe", script)
            stop = threading.Event()
            slow = [threading.Thread(target=trickle, args=(public, stop), daemon=True) for _ in range(SLOW_CLIENTS)]
            for thread in slow:
                thread.start()
            time.sleep(1)
            under_attack = wrk(f"http://127.0.0.1:{public}/webhooks/stripe", script)
            stop.set()
        finally:
            process.terminate()
            process.wait(30)
        name = f"{config[0]} {config[1]} x {config[2]}"
        print(f"{name:36} {read:34} {webhook:34} {under_attack}", flush=True)


if __name__ == "__main__":
    main()
