"""Commands that run the service: migrations, the web receiver, the workers, and everything-in-one for dev."""

from __future__ import annotations

import dataclasses
import os
import sys
import threading

import click

from ..logs import log_level
from ..settings import Settings


@click.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Apply the migrations to DATABASE_URL."""
    from ..db import upgrade

    settings = _settings_for("db upgrade")
    upgrade(settings.database_url, revision)
    click.echo(f"database at revision {revision}: {_without_password(settings.database_url)}")


@click.command()
@click.option("--host", default="0.0.0.0", show_default=True, help="Address of both ports.")
@click.option(
    "--port",
    default=int(os.environ.get("PORT", 8000)),
    show_default=True,
    type=int,
    help="Public port: POST /webhooks/stripe and /healthz only. The one to expose to Stripe.",
)
@click.option(
    "--internal-port",
    default=8001,
    show_default=True,
    type=int,
    help="Internal port: the read API, /metrics, /readyz, /healthz. Never expose it.",
)
@click.option("--workers", default=2, show_default=True, type=int, help="gunicorn worker processes")
@click.option("--threads", default=16, show_default=True, type=int, help="threads per worker process")
@click.option("--body-timeout", default=10.0, show_default=True, type=float, help="seconds to receive a body")
def serve(host: str, port: int, internal_port: int, workers: int, threads: int, body_timeout: float) -> None:
    """Run the webhook receiver (public port) and the read API (internal port) under gunicorn."""
    if port == internal_port:
        raise click.UsageError("--port and --internal-port must differ: the internal one is never public")
    from ..telemetry import prepare_metrics_dir

    settings = _settings_for("serve")
    os.environ["WEB_THREADS"] = str(threads)  # each web process sizes its database pool from it
    # Before gunicorn starts: prometheus_client picks multiprocess mode when it is imported.
    os.environ.update(prepare_metrics_dir(settings.metrics_dir, "web"))
    _exec("gunicorn", gunicorn_arguments(host, port, internal_port, workers, threads, body_timeout))


def gunicorn_arguments(
    host: str, port: int, internal_port: int, workers: int, threads: int, body_timeout: float = 10.0
) -> list[str]:
    # Threaded workers (gthread, whose threads also serve a kept-alive connection's next request: ThreadWorker):
    # a client that sends slowly holds one thread, not a whole process; 2 × 16 measured best
    # for webhooks on 2 cores (docs/runbook.md); the app bounds body reads (web/serving.py). --reuse-port: each
    # process listens on its own socket and the kernel spreads connections evenly between them; on one shared
    # socket the quickest process took most of the kept-alive connections (16 of 16 in some runs), so one
    # process's interpreter bounded the read API while the other sat idle.
    return [
        *("--bind", f"{host}:{port}", "--bind", f"{host}:{internal_port}"),
        *("--worker-class", "entitlement_sync.gunicorn_hooks.ThreadWorker"),
        *("--workers", str(workers), "--threads", str(threads)),
        "--reuse-port",
        *("--timeout", "30", "--graceful-timeout", "20", "--keep-alive", "5"),
        *("--limit-request-line", "4094", "--limit-request-fields", "50"),
        # The access log skips the webhooks that the receiver logs in one structured line (gunicorn_hooks.py).
        *("--access-logfile", "-", "--config", "python:entitlement_sync.gunicorn_hooks"),
        f"entitlement_sync.web.serving:serve_app(internal_port={internal_port}, body_read_seconds={body_timeout})",
    ]


@click.command()
@click.option("--processes", default=2, show_default=True, type=int)
@click.option("--threads", default=4, show_default=True, type=int)
def worker(processes: int, threads: int) -> None:
    """Run the Dramatiq workers that sync events into the access table (metrics on WORKER_METRICS_PORT)."""
    from ..tasks import webhooks_queue, worker_metrics_environment
    from ..telemetry import prepare_metrics_dir

    settings = _settings_for("worker")
    metrics = prepare_metrics_dir(settings.metrics_dir, "worker")
    os.environ.update(metrics)
    directory = metrics["PROMETHEUS_MULTIPROC_DIR"]
    os.environ.update(worker_metrics_environment(directory, settings.worker_metrics_host, settings.worker_metrics_port))
    queue = settings.queue_name
    os.environ["WORKER_THREADS"] = str(threads)  # each worker process sizes its database pool from it
    os.environ["WORKER_PROCESSES"] = str(processes)  # and, should Redis go away, its share of the Stripe budget
    _exec(
        "dramatiq",
        [
            "entitlement_sync.worker:broker",
            "--processes",
            str(processes),
            "--threads",
            str(threads),
            "--queues",
            queue,
            webhooks_queue(queue),
        ],
    )


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--internal-port", type=int, help="Serve the read API, /metrics and /readyz here instead of --port.")
def dev(host: str, port: int, internal_port: int | None) -> None:
    """Everything in one process on embedded parts: SQLite, an in-memory broker and worker. No Redis needed."""
    from ..bootstrap import bootstrap
    from ..db import upgrade
    from ..logs import configure_logging
    from ..tasks import build_stub_broker, start_in_process_worker
    from ..web import create_app

    configure_logging(json=False)
    # Embedded parts only: no Redis, not even for pacing the calls to Stripe (that stays in this process).
    settings = dataclasses.replace(Settings.from_env(), redis_url="")
    upgrade(settings.database_url)
    container = bootstrap(settings, broker=build_stub_broker())
    container.enable_sweep()
    start_in_process_worker(container.broker)
    click.echo(f"entitlement-sync dev: http://{host}:{port}  database: {_without_password(settings.database_url)}")
    if internal_port is None:
        create_app(container).run(host=host, port=port, threaded=True)
        return
    from werkzeug.serving import make_server

    internal = make_server(host, internal_port, create_app(container, "internal"), threaded=True)
    threading.Thread(target=internal.serve_forever, name="internal-http", daemon=True).start()
    click.echo(f"internal (read API, /metrics, /readyz): http://{host}:{internal_port}")
    create_app(container, "public").run(host=host, port=port, threaded=True)


def _settings_for(role: str) -> Settings:
    """The settings, or exit 2 with one line naming what is missing: better than starting to fail quietly."""
    try:
        settings = Settings.from_env()
        log_level(os.environ.get("LOG_LEVEL"))  # read by each process as it starts: refused here, once, instead
    except ValueError as error:  # a malformed setting: from_env's message names it (never a secret)
        click.echo(f"error: {error}", err=True)
        raise SystemExit(2) from None
    missing = settings.missing_for(role)
    if missing:
        names = ", ".join(missing)
        click.echo(
            f"error: {names} {'is' if len(missing) == 1 else 'are'} not set (required by `entitlement-sync {role}`)",
            err=True,
        )
        raise SystemExit(2)
    return settings


def _exec(module: str, arguments: list[str]) -> None:
    os.execv(sys.executable, [sys.executable, "-m", module, *arguments])


def _without_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
