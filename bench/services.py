"""Start ours (`entitlement-sync serve|worker`) or the bare references with one environment; reset state."""

from __future__ import annotations

import tempfile
import uuid
from typing import Any

import psycopg
import redis

from entitlement_sync.models import Base

from .common import API_KEY, READ_TOKEN, SECRET, Config, wait_for
from .procs import Server, free_port

BARE_SCHEMA = """
CREATE TABLE IF NOT EXISTS bare_events (
    id text PRIMARY KEY, type text NOT NULL, customer_id text, payload jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE TABLE IF NOT EXISTS bare_entitlements (
    customer_id text NOT NULL, feature_id text NOT NULL, lookup_key text NOT NULL, entitlement_id text NOT NULL,
    granted_at timestamptz NOT NULL DEFAULT clock_timestamp(), PRIMARY KEY (customer_id, feature_id));
"""


class Stack:
    """One side of a comparison (`ours` or `bare`), its processes and its environment."""

    def __init__(self, side: str, cfg: Config, stripe_url: str = "http://127.0.0.1:9", **extra: str) -> None:
        self.side, self.cfg = side, cfg
        self.namespace = f"es-bench-{uuid.uuid4().hex[:8]}"
        self.env = {
            "DATABASE_URL": cfg.database_url,
            "REDIS_URL": cfg.redis_url,
            "REDIS_NAMESPACE": self.namespace,
            "STRIPE_API_KEY": API_KEY,
            "STRIPE_API_BASE": stripe_url,
            "STRIPE_WEBHOOK_SECRETS": SECRET,
            "ACCESS_API_TOKENS": READ_TOKEN,
            "STRIPE_MAX_REQUESTS_PER_SECOND": "0",
            # Private to this stack: benches of other checkouts may run beside it on the same machine.
            "WORKER_METRICS_PORT": str(free_port()),
            "METRICS_DIR": tempfile.mkdtemp(prefix="es-bench-metrics-"),
            **extra,
        }
        self.servers: list[Server] = []
        self.web: Server | None = None
        self.worker: Server | None = None
        self.url = ""
        self.internal_url = ""  # ours: the read API's port (the public one serves webhooks only); bare: url

    def start_web(self, workers: int = 2, internal_port: int | None = None) -> Server:
        port, internal_port = free_port(), internal_port or free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.internal_url = f"http://127.0.0.1:{internal_port}" if self.side == "ours" else self.url
        if self.side == "ours":
            args = ["entitlement_sync.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
            args += ["--internal-port", str(internal_port)]
            args += ["--workers", str(workers)]
        else:
            args = ["gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", str(workers)]
            args += ["bench.reference.bare_web:app"]
        self.web = self._start(f"{self.side}-web", args)
        self.web.wait_http(f"{self.url}/healthz")
        return self.web

    def start_worker(self, processes: int = 2, threads: int = 8) -> Server:
        if self.side == "ours":
            args = ["entitlement_sync.cli", "worker", "--processes", str(processes), "--threads", str(threads)]
        else:
            args = ["dramatiq", "bench.reference.bare_worker", "--processes", str(processes)]
            args += ["--threads", str(threads), "--queues", "bare"]
        self.worker = self._start(f"{self.side}-worker", args)
        return self.worker

    def wait_ready(self, stripe: Any, timeout: float = 90) -> None:
        """Send one event through web and worker and wait for its row: start-up is not part of a measurement."""
        from .stripe import Poster, grant, summary_body

        customer = f"cus_ready_{self.namespace}"
        grant(stripe, [customer])
        Poster(self.url).post(summary_body(customer))
        table = "entitlements" if self.side == "ours" else "bare_entitlements"
        sql = f"SELECT count(*) FROM {table} WHERE customer_id = %s"
        if not wait_for(lambda: bool(scalar(self.cfg, sql, (customer,))), timeout, 0.1):
            raise RuntimeError(f"{self.side} never applied its first event")

    def _start(self, name: str, args: list[str]) -> Server:
        server = Server(name, args, self.env)
        self.servers.append(server)
        return server

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        self.servers.clear()
        client = redis.Redis.from_url(self.cfg.redis_url)
        keys = list(client.scan_iter(f"{self.namespace}*", count=1000))
        if keys:
            client.delete(*keys)

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def reset_tables(cfg: Config) -> None:
    """Empty every table of ours and of the bare references (the bench database is the bench's own)."""
    tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
    with psycopg.connect(cfg.dsn, autocommit=True) as connection:
        connection.execute(BARE_SCHEMA)
        connection.execute(f"TRUNCATE {tables}, bare_events, bare_entitlements")


def db_counters(cfg: Config) -> dict[str, int]:
    """Commits and sessions of the bench database so far, as PostgreSQL has flushed them."""
    with psycopg.connect(cfg.dsn, autocommit=True) as connection:
        row = connection.execute(
            "SELECT xact_commit, sessions FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    assert row is not None
    return {"commits": int(row[0]), "sessions": int(row[1])}


def settle(cfg: Config) -> None:
    """Wait until no other backend is on the bench database: exiting backends flush their stats."""

    with psycopg.connect(cfg.dsn, autocommit=True) as connection:

        def alone() -> bool:
            sql = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            row = connection.execute(sql).fetchone()
            return row is not None and row[0] == 0

        wait_for(alone, 15, 0.2)


def scalar(cfg: Config, sql: str, params: Any = None) -> Any:
    with psycopg.connect(cfg.dsn, autocommit=True) as connection:
        row = connection.execute(sql, params).fetchone()
    return None if row is None else row[0]
