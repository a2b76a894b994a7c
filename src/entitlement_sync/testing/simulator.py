"""An in-memory Stripe (`FakeStripe`) and an HTTP server in front of it (`StripeSimulatorServer`).

`FakeStripe.handle()` is the whole API logic; the server and the `responses` mock in our tests are two
transports over it, so both answer alike.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from . import shapes

Query = dict[str, list[str]]
Answer = tuple[int, dict[str, str], dict[str, Any]]


@dataclass
class Fault:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    query: Query
    status: int


class FakeStripe:
    """Customers' active entitlements, set directly; with knobs for scripted failures and a call log."""

    def __init__(self, api_key: str = "sk_test_simulator") -> None:
        self.api_key = api_key
        self.entitlements: dict[str, list[dict[str, Any]]] = {}
        self.deleted_customers: set[str] = set()
        self.calls: list[Call] = []
        self._faults: deque[Fault] = deque()
        self._lock = threading.Lock()
        self._routes: dict[tuple[str, str], Callable[[Query], Answer]] = {
            ("GET", "/v1/entitlements/active_entitlements"): self._list_active_entitlements,
        }

    # --- the model -----------------------------------------------------------------------------------

    def set_entitlements(self, customer_id: str, features: list[tuple[str, str]]) -> None:
        """Replace the customer's active entitlements with these (feature id, lookup key) pairs."""
        with self._lock:
            self.entitlements[customer_id] = [shapes.active_entitlement(f, key) for f, key in features]
            self.deleted_customers.discard(customer_id)

    def delete_customer(self, customer_id: str) -> None:
        with self._lock:
            self.entitlements.pop(customer_id, None)
            self.deleted_customers.add(customer_id)

    def truth(self, customer_id: str) -> set[tuple[str, str]]:
        """What Stripe says the customer has: {(feature id, lookup key)}."""
        with self._lock:
            return {(item["feature"], item["lookup_key"]) for item in self.entitlements.get(customer_id, [])}

    # --- knobs ---------------------------------------------------------------------------------------

    def fail_next(self, status: int, times: int = 1, *, headers: dict[str, str] | None = None) -> None:
        """Answer the next `times` requests with this HTTP status, in Stripe's error shape."""
        kinds = {401: "invalid_request_error", 403: "invalid_request_error", 429: "invalid_request_error"}
        body = shapes.error_body(kinds.get(status, "api_error"), f"Simulated HTTP {status}")
        if status == 429:
            body = shapes.error_body("invalid_request_error", "Too many requests", code="rate_limit")
        with self._lock:
            self._faults.extend(Fault(status, body, dict(headers or {})) for _ in range(times))

    def calls_to(self, path: str) -> list[Call]:
        return [call for call in self.calls if call.path == path]

    # --- the API -------------------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: Query, headers: dict[str, str]) -> Answer:
        status, answer_headers, body = self._answer(method, path, query, headers)
        with self._lock:
            self.calls.append(Call(method, path, query, status))
        return status, {"Request-Id": shapes.new_id("req"), **answer_headers}, body

    def _answer(self, method: str, path: str, query: Query, headers: dict[str, str]) -> Answer:
        authorization = {key.lower(): value for key, value in headers.items()}.get("authorization", "")
        if authorization != f"Bearer {self.api_key}":
            return 401, {}, shapes.error_body("invalid_request_error", "Invalid API Key provided")
        with self._lock:
            fault = self._faults.popleft() if self._faults else None
        if fault is not None:
            return fault.status, fault.headers, fault.body
        route = self._routes.get((method, path))
        if route is None:
            return (
                404,
                {},
                shapes.error_body("invalid_request_error", f"Unrecognized request URL ({method}: {path})"),
            )
        return route(query)

    def _list_active_entitlements(self, query: Query) -> Answer:
        customer = _one(query, "customer")
        if not customer:
            return _bad_param("customer", "Missing required param: customer.")
        limit = _limit(query)
        if limit is None:
            return _bad_param("limit", "Invalid integer: limit must be between 1 and 100.")
        with self._lock:
            if customer in self.deleted_customers:
                return (
                    404,
                    {},
                    shapes.error_body(
                        "invalid_request_error",
                        f"No such customer: '{customer}'",
                        code="resource_missing",
                        param="customer",
                    ),
                )
            items = list(self.entitlements.get(customer, []))
        return (
            200,
            {},
            _page("/v1/entitlements/active_entitlements", items, _one(query, "starting_after"), limit),
        )


def _one(query: Query, name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def _limit(query: Query) -> int | None:
    raw = _one(query, "limit") or "10"
    return int(raw) if raw.isdigit() and 1 <= int(raw) <= 100 else None


def _bad_param(param: str, message: str) -> Answer:
    return 400, {}, shapes.error_body("invalid_request_error", message, param=param)


def _page(url: str, items: list[dict[str, Any]], starting_after: str | None, limit: int) -> dict[str, Any]:
    start = 0
    if starting_after:
        ids = [item["id"] for item in items]
        start = ids.index(starting_after) + 1 if starting_after in ids else len(items)
    chunk = items[start : start + limit]
    return shapes.list_page(url, chunk, has_more=start + limit < len(items))


class StripeSimulatorServer:
    """Serves a FakeStripe over HTTP on 127.0.0.1 and a free port: `STRIPE_API_BASE=server.url`."""

    def __init__(self, stripe: FakeStripe, host: str = "127.0.0.1", port: int = 0) -> None:
        self.stripe = stripe
        handler = type("Handler", (_Handler,), {"stripe": stripe})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="stripe-simulator", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> StripeSimulatorServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> StripeSimulatorServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    stripe: FakeStripe
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        url = urlsplit(self.path)
        status, headers, body = self.stripe.handle("GET", url.path, parse_qs(url.query), dict(self.headers))
        payload = json.dumps(body).encode()
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass
