"""The read API for internal services, behind bearer tokens."""

from __future__ import annotations

import hmac
import time
from datetime import datetime

from flask import Blueprint, Response, g, jsonify, request
from flask.typing import ResponseReturnValue

from ._container import container

access = Blueprint("access", __name__, url_prefix="/v1/customers")


@access.before_request
def start_timer() -> None:
    g.read_started = time.perf_counter()


@access.after_request
def count_answer(response: Response) -> Response:
    seconds = time.perf_counter() - g.get("read_started", time.perf_counter())
    container().telemetry.read_answered(request.endpoint or "unknown", response.status_code, seconds)
    return response


@access.before_request
def require_bearer_token() -> ResponseReturnValue | None:
    tokens = container().settings.access_api_tokens
    if not tokens:
        return _unauthorized("the read API is disabled: no ACCESS_API_TOKENS are configured")
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not presented:
        return _unauthorized("missing bearer token")
    if not any(hmac.compare_digest(presented.encode(), token.encode()) for token in tokens):
        return _unauthorized("invalid bearer token")
    return None


def _unauthorized(reason: str) -> ResponseReturnValue:
    return jsonify(error=reason), 401, {"WWW-Authenticate": 'Bearer realm="entitlement-sync"'}


@access.get("/<customer>/entitlements")
def customer_entitlements(customer: str) -> ResponseReturnValue:
    found = container().reader.entitlements_for(customer)
    return jsonify(
        customer=customer,
        entitlements=[
            {"lookup_key": item.lookup_key, "feature": item.feature, "entitlement": item.entitlement}
            for item in found.entitlements
        ],
        synced_at=_iso(found.synced_at),
    )


@access.get("/<customer>/entitlements/<lookup_key>")
def customer_entitlement(customer: str, lookup_key: str) -> ResponseReturnValue:
    granted, synced_at = container().reader.access_to(customer, lookup_key)
    return jsonify(customer=customer, lookup_key=lookup_key, granted=granted, synced_at=_iso(synced_at))


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()
