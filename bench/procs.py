"""Server processes for the bench: started in their own session, measured from /proc, stopped by group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from .common import wait_for

LOGS = Path(tempfile.mkdtemp(prefix="es-bench-logs-"))
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    """A process group started from `python -m ...`; `cpu()` and `rss()` cover the group's every process."""

    def __init__(self, name: str, module_args: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.log_path = LOGS / f"{name}-{time.time_ns()}.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", *module_args],
                env={**os.environ, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=Path(__file__).resolve().parent.parent,
            )
        self.peak_rss: dict[int, int] = {}
        self._sampling = threading.Event()

    def pids(self) -> list[int]:
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[2]) == self.process.pid:  # the process group: ours, all its children
                    found.append(int(entry.name))
        return found

    def cpu(self) -> float:
        """CPU seconds (user + system) used so far by the group's live processes."""
        total = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])
        return total / TICKS

    def sample_rss(self) -> None:
        for pid in self.pids():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            kb = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
            self.peak_rss[pid] = max(self.peak_rss.get(pid, 0), kb)

    def start_sampling(self, interval: float = 0.5) -> None:
        def loop() -> None:
            while not self._sampling.wait(interval):
                self.sample_rss()

        threading.Thread(target=loop, daemon=True).start()

    def max_rss_mb(self) -> float:
        return round(max(self.peak_rss.values(), default=0) / 1024, 1)

    def wait_http(self, url: str, timeout: float = 30) -> None:
        def answers() -> bool:
            try:
                with urllib.request.urlopen(url, timeout=1):
                    return True
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.name} exited: {self.tail()}") from None
                return False

        if not wait_for(answers, timeout):
            raise RuntimeError(f"{self.name} did not answer {url}: {self.tail()}")

    def stop(self) -> None:
        self._sampling.set()
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        # Children may outlive the leader by a moment; their PostgreSQL backends flush stats as they exit.
        wait_for(lambda: not self.pids(), 10)

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
