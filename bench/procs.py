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


def _process_cpu(stat: Path) -> float:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


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
        total = 0.0
        for pid in self.pids():
            try:
                total += _process_cpu(Path(f"/proc/{pid}/stat"))
            except OSError:
                continue
        return total

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


class MachineCpu:
    """Where this machine's CPU went between two readings: PostgreSQL's server processes (its backends included) and
    the share left idle. The worker drain is paced by its threads' time per event, which CPU contention stretches:
    the parts that read these show how much of the two cores each side leaves to the rest."""

    def __init__(self) -> None:
        self.postgres, self.idle, self.at = self._postgres(), self._idle(), time.monotonic()

    def since(self, earlier: MachineCpu) -> tuple[float | None, float]:
        """(PostgreSQL's CPU seconds, None when no server of it runs here; the idle share of all cores)."""
        postgres = None if earlier.postgres is None or self.postgres is None else self.postgres - earlier.postgres
        cores = os.cpu_count() or 1
        return postgres, (self.idle - earlier.idle) / max((self.at - earlier.at) * cores, 1e-9)

    @staticmethod
    def _postgres() -> float | None:
        """CPU seconds of the live processes named `postgres` (a backend that exited meanwhile is not counted: the
        drain keeps its connections, so few do)."""
        total, seen = 0.0, False
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if (entry / "comm").read_text().strip() != "postgres":
                    continue
                total += _process_cpu(entry / "stat")
                seen = True
            except OSError:
                continue
        return total if seen else None

    @staticmethod
    def _idle() -> float:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        return (int(fields[3]) + int(fields[4])) / TICKS  # idle + iowait, over all cores
