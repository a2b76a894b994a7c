"""Real processes for end-to-end tests: the web app under gunicorn and `dramatiq` workers, as in production.

Each process gets its environment from `ServiceEnvironment`, logs to a file the test can show on failure,
and is stopped (or killed) by the test. Nothing here touches the machine's own PostgreSQL or Redis servers.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests

from entitlement_sync.testing import sign

WEBHOOK_SECRET = "whsec_e2e"
API_KEY = "sk_test_simulator"
READ_TOKEN = "e2e-read-token"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> float:
    """Poll until `condition()` holds; returns the seconds it took, or fails naming what never happened."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if condition():
                return time.monotonic() - started
        except requests.RequestException:
            pass
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@dataclass
class ServiceEnvironment:
    database_url: str
    redis_url: str
    stripe_api_base: str
    extra: dict[str, str] = field(default_factory=dict)
    namespace: str = field(default_factory=lambda: f"es-e2e-{uuid.uuid4().hex[:8]}")
    # Each service its own metrics files and worker metrics port: services of parallel runs never meet.
    worker_metrics_port: int = field(default_factory=lambda: free_port())

    @property
    def metrics_dir(self) -> str:
        return os.path.join(tempfile.gettempdir(), f"{self.namespace}-metrics")

    def variables(self) -> dict[str, str]:
        return {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "REDIS_NAMESPACE": self.namespace,
            "STRIPE_API_KEY": API_KEY,
            "STRIPE_API_BASE": self.stripe_api_base,
            "STRIPE_WEBHOOK_SECRETS": WEBHOOK_SECRET,
            "ACCESS_API_TOKENS": READ_TOKEN,
            "STRIPE_TIMEOUT_SECONDS": "2",
            "SYNC_MIN_BACKOFF_MS": "50",
            "SYNC_MAX_BACKOFF_MS": "1000",
            "SWEEP_INTERVAL_SECONDS": "1",
            "STUCK_AFTER_SECONDS": "20",
            # The simulated Stripe has no rate limit unless a scenario sets one; that scenario paces the workers.
            "STRIPE_MAX_REQUESTS_PER_SECOND": "0",
            "METRICS_DIR": self.metrics_dir,
            "WORKER_METRICS_HOST": "127.0.0.1",
            "WORKER_METRICS_PORT": str(self.worker_metrics_port),
            **self.extra,
        }


class ManagedProcess:
    def __init__(self, name: str, arguments: list[str], environment: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}-{uuid.uuid4().hex[:6]}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", *arguments],
            env=environment,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group: gunicorn and dramatiq fork children."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)

    def stop(self, timeout: float = 15) -> None:
        self.kill(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill(signal.SIGKILL)
            self.process.wait(5)
        self._log.close()

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class Service:
    """The web receiver and its workers, started from the same commands as the Procfile."""

    def __init__(self, environment: ServiceEnvironment, log_dir: Path) -> None:
        self.environment = environment
        self.log_dir = log_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.web: ManagedProcess | None = None
        self.workers: list[ManagedProcess] = []
        self.http = requests.Session()

    def migrate(self) -> None:
        subprocess.run(
            [sys.executable, "-m", "entitlement_sync.cli", "db", "upgrade"],
            env=self.environment.variables(),
            check=True,
            capture_output=True,
        )

    def start_web(self, workers: int = 2) -> None:
        """`entitlement-sync serve`, as the Procfile runs it (it execs gunicorn)."""
        arguments = ["serve", "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(workers)]
        self.web = ManagedProcess(
            "web", ["entitlement_sync.cli", *arguments], self.environment.variables(), self.log_dir
        )
        wait_until(lambda: self.http.get(f"{self.url}/healthz", timeout=1).ok, 30, "the web process to answer")

    def web_worker_pids(self) -> list[int]:
        """gunicorn's worker processes: the children of the master, which `serve` exec'd in its own process."""
        assert self.web is not None
        master = self.web.process.pid
        return [int(pid) for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split()]

    def start_worker(self, processes: int = 2, threads: int = 4) -> ManagedProcess:
        """`entitlement-sync worker`, as the Procfile runs it (it execs dramatiq)."""
        arguments = ["worker", "--processes", str(processes), "--threads", str(threads)]
        worker = ManagedProcess(
            "worker", ["entitlement_sync.cli", *arguments], self.environment.variables(), self.log_dir
        )
        self.workers.append(worker)
        return worker

    def stop(self) -> None:
        for process in [*self.workers, *([self.web] if self.web else [])]:
            process.stop()
        shutil.rmtree(self.environment.metrics_dir, ignore_errors=True)

    def logs(self) -> str:
        return "\n\n".join(f"--- {p.name} ---\n{p.tail()}" for p in [*self.workers, *([self.web] if self.web else [])])

    def deliver(
        self, payload: bytes, *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None
    ) -> requests.Response:
        headers = {"Stripe-Signature": sign(payload, secret, timestamp), "Content-Type": "application/json"}
        return self.http.post(f"{self.url}/webhooks/stripe", data=payload, headers=headers, timeout=10)

    def entitlements(self, customer: str) -> dict:
        response = self.http.get(
            f"{self.url}/v1/customers/{customer}/entitlements",
            headers={"Authorization": f"Bearer {READ_TOKEN}"},
            timeout=5,
        )
        response.raise_for_status()
        return response.json()
