"""Private, throwaway Redis and PostgreSQL servers that a scenario may stop and start at will.

The machine's own servers are never touched: each of these listens on a free port of 127.0.0.1 and lives
in a temporary directory that is removed afterwards.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import redis

from tests.e2e.harness import free_port, wait_until

POSTGRES_BIN = Path(os.environ.get("POSTGRES_BIN", "/usr/lib/postgresql/15/bin"))


def require(binary: Path | str) -> None:
    found = Path(binary).exists() if isinstance(binary, Path) else shutil.which(binary)
    if not found:
        if os.environ.get("ENTITLEMENT_SYNC_REQUIRE_SERVICES"):
            raise RuntimeError(f"{binary} is needed for this scenario")
        pytest.skip(f"{binary} not found")


class PrivateRedis:
    """`redis-server` without persistence: stopping it loses every queue, as a crashed Redis would."""

    def __init__(self, log_dir: Path) -> None:
        require("redis-server")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._log_path = log_dir / f"redis-{self.port}.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self._log_path.open("ab")
        self._process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        wait_until(lambda: _answers(client), 15, "the private Redis to answer")
        client.close()

    def stop(self) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(5)

    def freeze(self) -> None:
        """SIGSTOP: the server keeps its port and its connections but answers nothing, as a hung Redis does."""
        assert self._process is not None
        os.kill(self._process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self._process is not None
        os.kill(self._process.pid, signal.SIGCONT)


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


class PrivatePostgres:
    """A PostgreSQL cluster made by `initdb` in a temporary directory, driven by `pg_ctl`."""

    def __init__(self) -> None:
        require(POSTGRES_BIN / "initdb")
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        # Not pytest's tmp_path: its parents are private to root, and the server runs as `postgres`.
        self.directory = Path(tempfile.mkdtemp(prefix="es-e2e-pg-"))
        self._data = self.directory / "data"
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        self._run("initdb", "-D", str(self._data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            "pg_ctl",
            "-D",
            str(self._data),
            "-o",
            options,
            "-l",
            str(self.directory / "server.log"),
            "-w",
            "-t",
            "30",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self._data), "-m", mode, "-w", "-t", "30", "stop", check=False)

    def freeze(self) -> None:
        """SIGSTOP to the postmaster, then to every backend: connections stay open, nothing answers."""
        postmaster = self._postmaster()
        for pid in [postmaster, *_children(postmaster)]:
            os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        postmaster = self._postmaster()
        for pid in [*_children(postmaster), postmaster]:
            os.kill(pid, signal.SIGCONT)

    def _postmaster(self) -> int:
        return int((self._data / "postmaster.pid").read_text().split()[0])

    def remove(self) -> None:
        if (self._data / "postmaster.pid").exists():
            self.stop("immediate")
        shutil.rmtree(self.directory, ignore_errors=True)

    def log(self) -> str:
        path = self.directory / "server.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def _run(self, binary: str, *arguments: str, check: bool = True) -> None:
        command = [str(POSTGRES_BIN / binary), *arguments]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        started = time.monotonic()
        result = subprocess.run(command, capture_output=True, timeout=60, cwd=self.directory)
        if check and result.returncode:
            elapsed = time.monotonic() - started
            raise RuntimeError(f"{binary} failed after {elapsed:.1f} s: {result.stderr.decode(errors='replace')}")


def _children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
