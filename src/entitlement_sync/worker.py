"""Entry point of the worker processes: `dramatiq entitlement_sync.worker:broker` (or `entitlement-sync worker`).

Dramatiq imports this module in each worker process it forks, so every process builds its own engine.
"""

from .bootstrap import bootstrap
from .logs import configure_logging

configure_logging()
container = bootstrap()
container.enable_sweep()
broker = container.broker
