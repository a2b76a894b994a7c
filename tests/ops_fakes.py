"""Stripe's list endpoints that the ops commands read (events, subscriptions, features, product features),
faked with `responses` in front of FakeStripe, which keeps answering everything else (active entitlements).

Every request is logged with the moment it arrived, so tests can count requests per second and per customer.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import responses

from entitlement_sync.testing import FakeStripe, list_page
from entitlement_sync.testing.shapes import error_body
from tests.fakes import stripe_over_responses

STRIPE_API = re.compile(r"https://api\.stripe\.com/.*")
ACTIVE_ENTITLEMENTS = "/v1/entitlements/active_entitlements"
Query = dict[str, list[str]]


@dataclass(frozen=True)
class Seen:
    at: float  # time.monotonic() when the request arrived
    path: str
    query: Query


@dataclass
class OpsStripe:
    fake: FakeStripe
    events: list[dict[str, Any]] = field(default_factory=list)
    undelivered: set[str] = field(default_factory=set)
    subscriptions: list[dict[str, Any]] = field(default_factory=list)
    features: list[dict[str, Any]] = field(default_factory=list)
    product_features: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    # Raise KeyboardInterrupt (as Ctrl-C would) instead of answering this many entitlement requests in.
    interrupt_after: int | None = None
    # HTTP statuses to answer the next requests to the ops endpoints with, in Stripe's error shape.
    failures: list[int] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, method: str, path: str, query: Query, headers: dict[str, str]) -> tuple[int, dict, dict]:
        with self._lock:
            answered = sum(1 for seen in self.seen if seen.path == ACTIVE_ENTITLEMENTS)
            if path == ACTIVE_ENTITLEMENTS and self.interrupt_after is not None and answered >= self.interrupt_after:
                self.interrupt_after = None
                raise KeyboardInterrupt
            self.seen.append(Seen(time.monotonic(), path, query))
        route = self._route(method, path)
        if route is None:
            return self.fake.handle(method, path, query, headers)
        if self.failures:
            status = self.failures.pop(0)
            return (
                status,
                {},
                error_body("api_error" if status >= 500 else "invalid_request_error", f"HTTP {status}"),
            )
        return route(path, query)

    def _route(self, method: str, path: str) -> Any:
        if method != "GET":
            return None
        if path == "/v1/events":
            return self._events
        if path == "/v1/subscriptions":
            return lambda path, query: _paged(path, self.subscriptions, query)
        if path == "/v1/entitlements/features":
            return self._features
        if re.fullmatch(r"/v1/products/[^/]+/features", path):
            return self._product_features
        return None

    def _events(self, path: str, query: Query) -> tuple[int, dict, dict]:
        types = {values[0] for key, values in query.items() if key.startswith("types[")}
        since = int(query.get("created[gte]", ["0"])[0])
        undelivered = query.get("delivery_success") == ["false"]
        chosen = [
            item
            for item in sorted(self.events, key=lambda item: -item["created"])
            if (not types or item["type"] in types)
            and item["created"] >= since
            and (not undelivered or item["id"] in self.undelivered)
        ]
        return _paged(path, chosen, query)

    def _features(self, path: str, query: Query) -> tuple[int, dict, dict]:
        archived = query.get("archived", [None])[0]
        chosen = [f for f in self.features if archived is None or f["active"] == (archived == "false")]
        return _paged(path, chosen, query)

    def _product_features(self, path: str, query: Query) -> tuple[int, dict, dict]:
        product = path.split("/")[3]
        if product not in self.product_features:
            body = error_body(
                "invalid_request_error", f"No such product: '{product}'", code="resource_missing", param="id"
            )
            return 404, {}, body
        return _paged(path, self.product_features[product], query)

    # --- what the tests look at ------------------------------------------------------------------------

    def entitlement_calls_per_customer(self) -> Counter[str]:
        return Counter(seen.query["customer"][0] for seen in self.seen if seen.path == ACTIVE_ENTITLEMENTS)

    def max_requests_in_any_second(self) -> int:
        """The most requests that arrived within any sliding one-second window."""
        moments = sorted(seen.at for seen in self.seen)
        most, start = 0, 0
        for end, moment in enumerate(moments):
            while moment - moments[start] >= 1.0:
                start += 1
            most = max(most, end - start + 1)
        return most


def _paged(path: str, items: list[dict[str, Any]], query: Query) -> tuple[int, dict, dict]:
    limit = int(query.get("limit", ["10"])[0])
    start = 0
    if "starting_after" in query:
        ids = [item["id"] for item in items]
        start = ids.index(query["starting_after"][0]) + 1
    chunk = items[start : start + limit]
    return 200, {}, list_page(path, chunk, has_more=start + limit < len(items))


def ops_stripe_over_responses(ops: OpsStripe) -> AbstractContextManager[responses.RequestsMock]:
    """Route api.stripe.com through `ops.handle`; this mock sits on top of the `fake_stripe` fixture's one."""
    return stripe_over_responses(ops)
