"""The read API for internal services, behind bearer tokens."""

from __future__ import annotations

import hmac
import time
from typing import Any

from flask import Blueprint, Response, g, jsonify, request
from flask.typing import ResponseReturnValue

from .. import fastjson
from ..access import AccessDecision
from ._container import container

access = Blueprint("access", __name__, url_prefix="/v1/customers")


@access.before_request
def admit() -> ResponseReturnValue | None:
    """Start the answer's timer and let only a valid bearer token through (one hook: each costs a call)."""
    g.read_started = time.perf_counter()
    return require_bearer_token()


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


@access.after_request
def count_answer(response: Response) -> Response:
    seconds = time.perf_counter() - g.get("read_started", time.perf_counter())
    container().telemetry.read_answered(request.endpoint or "unknown", response.status_code, seconds)
    return response


def _unauthorized(reason: str) -> ResponseReturnValue:
    return jsonify(error=reason), 401, {"WWW-Authenticate": 'Bearer realm="entitlement-sync"'}


@access.get("/<customer>/entitlements")
def customer_entitlements(customer: str) -> ResponseReturnValue:
    """Effective access: `entitlements` lists what the customer may use (one item per Stripe feature, as
    before, or one for a grant made outside Stripe); `refused` the keys withheld or denied, with why."""
    listing = container().reader.effective_for(customer)
    return _json(
        {
            "customer": customer,
            "entitlements": [item for decision in listing.decisions if decision.granted for item in _items(decision)],
            "refused": [_answer(decision) for decision in listing.decisions if not decision.granted],
            "synced_at": listing.synced_at,
            "stale": listing.stale,
        }
    )


@access.get("/<customer>/entitlements/<lookup_key>")
def customer_entitlement(customer: str, lookup_key: str) -> ResponseReturnValue:
    decision = container().reader.check(customer, lookup_key)
    return _json(
        {
            "customer": customer,
            "lookup_key": lookup_key,
            "granted": decision.granted,
            "synced_at": decision.synced_at,
            "reason": decision.reason,
            "sources": decision.sources,
            "stale": decision.stale,
        }
    )


def _json(document: dict[str, Any]) -> Response:
    # orjson, not jsonify: the stdlib's encoder was a large share of a read's CPU; datetimes go in as they are
    # and come out as `isoformat()` writes them.
    return Response(fastjson.dumps(document), mimetype="application/json")


def _items(decision: AccessDecision) -> list[dict[str, Any]]:
    """One item per Stripe entitlement behind the key (two features may share a key); else one, whose
    feature is the catalog's when the catalog rule grants it and null for an operator's grant."""
    entitlements = [s for s in decision.sources if s["kind"] == "entitlement"]
    pairs: list[tuple[str | None, str | None]] = [(s["detail"], s["id"]) for s in entitlements]
    if not pairs:
        products = [s for s in decision.sources if s["kind"] == "product"]
        pairs = [(products[0]["detail"] if products else None, None)]
    return [
        {"lookup_key": decision.lookup_key, "feature": feature, "entitlement": entitlement, **_why(decision)}
        for feature, entitlement in pairs
    ]


def _answer(decision: AccessDecision) -> dict[str, Any]:
    return {"lookup_key": decision.lookup_key, **_why(decision)}


def _why(decision: AccessDecision) -> dict[str, Any]:
    return {"reason": decision.reason, "sources": decision.sources, "since": decision.since}
