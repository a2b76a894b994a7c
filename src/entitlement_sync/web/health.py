"""Liveness (`/healthz`, on both surfaces) and readiness (`/readyz`, internal only).

Readiness names the dependency that is down and nothing else: no host, user or exception text (a DSN in an
error message would tell a stranger where the database lives). The details go to the log.
"""

from __future__ import annotations

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from ..db import ping, schema_revisions
from ..errors import QueueUnavailable, StorageUnavailable
from ..logs import get_logger
from ._container import container

log = get_logger(__name__)
health = Blueprint("health", __name__)
readiness = Blueprint("readiness", __name__)


@health.get("/healthz")
def healthz() -> ResponseReturnValue:
    return jsonify(status="ok")


@readiness.get("/readyz")
def readyz() -> ResponseReturnValue:
    checks = {"database": _database(), "broker": _broker()}
    ready = all(value == "ok" for value in checks.values())
    return jsonify(status="ready" if ready else "not ready", checks=checks), 200 if ready else 503


def _database() -> str:
    engine = container().engine
    try:
        ping(engine)
        current, latest = schema_revisions(engine)
    except StorageUnavailable as error:
        log.warning("readyz.database_unavailable", error=str(error))
        return "unavailable"
    if current != latest:
        log.warning("readyz.schema_behind", current=current, latest=latest)
        return f"schema at {current or 'nothing'}, code needs {latest}: run `entitlement-sync db upgrade`"
    return "ok"


def _broker() -> str:
    try:
        container().queue.ping()
    except QueueUnavailable as error:
        log.warning("readyz.broker_unavailable", error=str(error))
        return "unavailable"
    return "ok"
