"""Liveness and readiness probes."""

from __future__ import annotations

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from ..db import ping
from ..errors import QueueUnavailable, StorageUnavailable
from ._container import container

health = Blueprint("health", __name__)


@health.get("/healthz")
def healthz() -> ResponseReturnValue:
    return jsonify(status="ok")


@health.get("/readyz")
def readyz() -> ResponseReturnValue:
    checks = {"database": "ok", "broker": "ok"}
    try:
        ping(container().engine)
    except StorageUnavailable as error:
        checks["database"] = str(error)
    try:
        container().queue.ping()
    except QueueUnavailable as error:
        checks["broker"] = str(error)
    ready = all(value == "ok" for value in checks.values())
    return jsonify(status="ready" if ready else "not ready", checks=checks), 200 if ready else 503
