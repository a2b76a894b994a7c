"""Commands that run the service: migrations, the web receiver, the workers, and everything-in-one for dev."""

from __future__ import annotations

import dataclasses
import os
import sys

import click

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
@click.option("--host", default="0.0.0.0", show_default=True)
@click.option("--port", default=int(os.environ.get("PORT", 8000)), show_default=True, type=int)
@click.option("--workers", default=2, show_default=True, type=int, help="gunicorn worker processes")
def serve(host: str, port: int, workers: int) -> None:
    """Run the webhook receiver and read API under gunicorn."""
    from ..telemetry import prepare_metrics_dir

    settings = _settings_for("serve")

    # Before gunicorn starts: prometheus_client picks multiprocess mode when it is imported.
    os.environ.update(prepare_metrics_dir(settings.metrics_dir, "web"))
    _exec(
        "gunicorn",
        [
            "--bind",
            f"{host}:{port}",
            "--workers",
            str(workers),
            "--access-logfile",
            "-",
            "--graceful-timeout",
            "20",
            "--config",
            "python:entitlement_sync.gunicorn_hooks",
            "entitlement_sync.web:create_app()",
        ],
    )


@click.command()
@click.option("--processes", default=2, show_default=True, type=int)
@click.option("--threads", default=4, show_default=True, type=int)
def worker(processes: int, threads: int) -> None:
    """Run the Dramatiq workers that sync events into the access table (metrics on WORKER_METRICS_PORT)."""
    from ..tasks import worker_metrics_environment
    from ..telemetry import prepare_metrics_dir

    settings = _settings_for("worker")
    metrics = prepare_metrics_dir(settings.metrics_dir, "worker")
    os.environ.update(metrics)
    directory = metrics["PROMETHEUS_MULTIPROC_DIR"]
    os.environ.update(worker_metrics_environment(directory, settings.worker_metrics_host, settings.worker_metrics_port))
    queue = settings.queue_name
    os.environ["WORKER_THREADS"] = str(threads)  # each worker process sizes its database pool from it
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
        ],
    )


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
def dev(host: str, port: int) -> None:
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
    create_app(container).run(host=host, port=port, threaded=True)


def _settings_for(role: str) -> Settings:
    """The settings, or exit 2 with one line naming what is missing: better than starting to fail quietly."""
    settings = Settings.from_env()
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
