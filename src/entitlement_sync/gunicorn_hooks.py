"""gunicorn server hooks and settings, loaded by `entitlement-sync serve`
(`--config python:entitlement_sync.gunicorn_hooks`)."""

from __future__ import annotations

from typing import Any

from gunicorn.glogging import Logger

from .telemetry import process_exited

WEBHOOK_PATH = "/webhooks/stripe"
READ_API_PREFIX = "/v1/customers/"


def child_exit(server: Any, worker: Any) -> None:
    # A replaced web process's live gauges (the breaker state) must not outlive it; its counters stay.
    process_exited(worker.pid)


def logged_by_the_receiver(method: str, path: str, status: int | None) -> bool:
    """A webhook answered 200 or 400 already has its one structured line (`webhook.accepted|duplicate|ignored|
    rejected`, with the event id): an access line beside it would double the log of the busiest path."""
    return method == "POST" and path == WEBHOOK_PATH and status in (200, 400)


def counted_by_the_read_api(method: str, path: str, status: int | None) -> bool:
    """A read answered 200 is counted in `read_api_duration_seconds` (by endpoint, status and time): a line
    for each, thousands a second from the services that ask, would cost a read a tenth of its CPU and say
    nothing the metric does not. Refusals and errors keep their line."""
    return method == "GET" and status == 200 and path.startswith(READ_API_PREFIX)


class AccessLog(Logger):  # type: ignore[misc]  # gunicorn is untyped
    """gunicorn's access log for every request but the webhooks the receiver logs itself and the reads the
    read API counts."""

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        status = getattr(resp, "status_code", None)
        if logged_by_the_receiver(req.method, req.path, status) or counted_by_the_read_api(
            req.method, req.path, status
        ):
            return
        super().access(resp, req, environ, request_time)


logger_class = AccessLog
