"""Entry point of the worker processes: `dramatiq entitlement_sync.worker:broker` (or `entitlement-sync worker`).

Dramatiq imports this module in each worker process it forks, so every process builds its own engine.
"""

from .bootstrap import bootstrap
from .logs import configure_logging, get_logger
from .settings import Settings

# The sweep's thread holds two connections while it runs: its lock's transaction and its own work.
SWEEP_CONNECTIONS = 2

configure_logging()
settings = Settings.from_env()
container = bootstrap(settings, threads=settings.worker_threads + SWEEP_CONNECTIONS)
container.enable_sweep()
if not container.enable_worker_metrics():
    get_logger(__name__).warning(
        "metrics.not_exported", hint="start workers with `entitlement-sync worker` (it prepares METRICS_DIR)"
    )
broker = container.broker
