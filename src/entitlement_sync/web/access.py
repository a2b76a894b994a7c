"""The read API for internal services, behind bearer tokens.

Its two GETs are the internal port's busiest routes, answered in plain WSGI in front of the Flask app
(`ReadRoute`, which `create_app` installs wherever the blueprint is), as the webhooks are (web/webhooks.py): no
request object, routing, hooks or app context per read, a third of a read's CPU in the server. The blueprint
declares the same routes and answers, the same way, whatever the plain path passes on (a HEAD, a path it
does not take).
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, g, jsonify, request
from flask.typing import ResponseReturnValue

from .. import fastjson
from ..access import AccessDecision, AccessReader
from ..bootstrap import Container
from ..errors import StorageUnavailable
from ..logs import get_logger
from ._container import container

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

PREFIX = "/v1/customers"
access = Blueprint("access", __name__, url_prefix=PREFIX)
log = get_logger(__name__)
UNAVAILABLE = "database unavailable, try again later"
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="entitlement-sync"'}


def refusal(tokens: tuple[str, ...], authorization: str) -> str | None:
    """Why a request with this Authorization header may not read (None: it may)."""
    if not tokens:
        return "the read API is disabled: no ACCESS_API_TOKENS are configured"
    scheme, _, presented = authorization.partition(" ")
    if scheme.lower() != "bearer" or not presented:
        return "missing bearer token"
    if not any(hmac.compare_digest(presented.encode(), token.encode()) for token in tokens):
        return "invalid bearer token"
    return None


@access.before_request
def admit() -> ResponseReturnValue | None:
    """Start the answer's timer and let only a valid bearer token through (one hook: each costs a call)."""
    g.read_started = time.perf_counter()
    return require_bearer_token()


def require_bearer_token() -> ResponseReturnValue | None:
    reason = refusal(container().settings.access_api_tokens, request.headers.get("Authorization", ""))
    return None if reason is None else (jsonify(error=reason), 401, CHALLENGE)


@access.after_request
def count_answer(response: Response) -> Response:
    seconds = time.perf_counter() - g.get("read_started", time.perf_counter())
    container().telemetry.read_answered(request.endpoint or "unknown", response.status_code, seconds)
    return response


@access.get("/<customer>/entitlements")
def customer_entitlements(customer: str) -> ResponseReturnValue:
    return Response(fastjson.dumps(listing(container().reader, customer)), mimetype="application/json")


@access.get("/<customer>/entitlements/<lookup_key>")
def customer_entitlement(customer: str, lookup_key: str) -> ResponseReturnValue:
    return Response(fastjson.dumps(decision(container().reader, customer, lookup_key)), mimetype="application/json")


def listing(reader: AccessReader, customer: str) -> dict[str, Any]:
    """Effective access: `entitlements` lists what the customer may use (one item per Stripe feature, as
    before, or one for a grant made outside Stripe); `refused` the keys withheld or denied, with why."""
    found = reader.effective_for(customer)
    return {
        "customer": customer,
        "entitlements": [item for decision in found.decisions if decision.granted for item in _items(decision)],
        "refused": [_answer(decision) for decision in found.decisions if not decision.granted],
        "synced_at": found.synced_at,
        "stale": found.stale,
    }


def decision(reader: AccessReader, customer: str, lookup_key: str) -> dict[str, Any]:
    found = reader.check(customer, lookup_key)
    return {
        "customer": customer,
        "lookup_key": lookup_key,
        "granted": found.granted,
        "synced_at": found.synced_at,
        "reason": found.reason,
        "sources": found.sources,
        "stale": found.stale,
    }


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


# The plain path: (the endpoint's name as Flask knows it, for the metric; the document for the path's parts).
Route = tuple[str, Callable[..., dict[str, Any]]]
ROUTES: dict[int, Route] = {
    2: ("access.customer_entitlements", listing),  # /<customer>/entitlements
    3: ("access.customer_entitlement", decision),  # /<customer>/entitlements/<lookup_key>
}


class ReadRoute:
    """WSGI: the read API's GETs answered here, every other request passed to the app behind."""

    def __init__(self, app: WSGIApplication, found: Container) -> None:
        self._app = app
        self._container = found

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        parts = _parts(environ) if environ.get("REQUEST_METHOD") == "GET" else None
        if parts is None:
            return self._app(environ, start_response)
        started = time.perf_counter()
        endpoint, document = ROUTES[len(parts)]
        status, body, headers = self._answer(environ, document, parts)
        self._container.telemetry.read_answered(endpoint, status, time.perf_counter() - started)
        start_response(
            f"{status} {HTTPStatus(status).phrase}",
            [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *headers.items()],
        )
        return [body]

    def _answer(
        self, environ: WSGIEnvironment, document: Callable[..., dict[str, Any]], parts: list[str]
    ) -> tuple[int, bytes, dict[str, str]]:
        reason = refusal(self._container.settings.access_api_tokens, environ.get("HTTP_AUTHORIZATION", ""))
        if reason is not None:
            return 401, fastjson.dumps({"error": reason}), CHALLENGE
        try:
            return 200, fastjson.dumps(document(self._container.reader, parts[0], *parts[2:])), {}
        except StorageUnavailable as error:
            log.warning("database.unavailable", error=str(error))
            return 503, fastjson.dumps({"error": UNAVAILABLE}), {"Retry-After": "30"}
        except Exception:
            log.exception("read.failed")
            return 500, fastjson.dumps({"error": "internal error"}), {}


def _parts(environ: WSGIEnvironment) -> list[str] | None:
    """`[customer, "entitlements"(, lookup_key)]` for a path of the read API, else None (the app's to answer).
    Decoded as werkzeug decodes a path (PEP 3333 hands it over as latin-1)."""
    path: str = environ.get("PATH_INFO", "")
    if not path.startswith(PREFIX + "/"):
        return None
    parts = path[len(PREFIX) + 1 :].encode("latin-1").decode(errors="replace").split("/")
    if len(parts) not in ROUTES or parts[1] != "entitlements" or not all(parts):
        return None
    return parts
