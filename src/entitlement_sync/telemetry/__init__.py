"""prometheus_client's one home: the metrics, the Telemetry port over them, and how each process exposes them.

Counted once across processes: each process family writes its own prometheus multiprocess directory
(`METRICS_DIR/web` for the gunicorn processes, `METRICS_DIR/worker` for the Dramatiq processes), and each
directory is exposed by exactly one endpoint: the web's `/metrics`, and the worker's exposition server
(Dramatiq's Prometheus middleware, on `WORKER_METRICS_PORT`). Web and worker need not share a filesystem
(separate containers, separate hosts), each family wipes only its own directory when it starts, and
Prometheus adds the instances up. Without a directory (tests, `dev`) the metrics live in this process.

`metrics.py`: the metrics and the Telemetry port over them; `exposition.py`: how a process family exposes them,
and the gauges read from SQL at scrape time.
"""

from .exposition import (
    DeliveryCollector,
    FeedCollector,
    ReconcileCollector,
    ServiceCollector,
    expose_process_metrics,
    multiprocess_mode,
    prepare_metrics_dir,
    process_exited,
)
from .metrics import REGISTRY, PrometheusTelemetry, count_webhook_delivery, declare_webhook_subscribers

__all__ = [
    "REGISTRY",
    "DeliveryCollector",
    "FeedCollector",
    "PrometheusTelemetry",
    "ReconcileCollector",
    "ServiceCollector",
    "count_webhook_delivery",
    "declare_webhook_subscribers",
    "expose_process_metrics",
    "multiprocess_mode",
    "prepare_metrics_dir",
    "process_exited",
]
