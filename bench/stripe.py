"""The simulated Stripe for the bench (a call log with times, 50 ms answers) and signed webhook deliveries."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from entitlement_sync.testing import (
    FakeStripe,
    StripeSimulatorServer,
    active_entitlement,
    event,
    sign,
    subscription,
    summary_event,
)

from .common import API_KEY, SECRET

ENTITLEMENTS_PATH = "/v1/entitlements/active_entitlements"
FEATURES = [("feat_bench_api", "api_access"), ("feat_bench_ai", "ai_assistant")]


class TimedStripe(FakeStripe):
    """A FakeStripe that also notes when each API call arrived (monotonic seconds), for rate windows."""

    def __init__(self) -> None:
        super().__init__(api_key=API_KEY)
        self.call_times: list[tuple[float, str]] = []

    def handle(self, method: str, path: str, query: Any, headers: dict[str, str]) -> Any:
        with self._calls_lock:
            self.call_times.append((time.monotonic(), path))
        return super().handle(method, path, query, headers)

    def entitlement_call_times(self) -> list[float]:
        with self._calls_lock:
            return [moment for moment, path in self.call_times if path == ENTITLEMENTS_PATH]


def simulator(latency: float = 0.05) -> StripeSimulatorServer:
    """A started simulator answering every call after `latency` seconds (Stripe's real latency is higher)."""
    stripe = TimedStripe()
    stripe.faults.slow_share, stripe.faults.slow_seconds = (1.0, latency) if latency else (0.0, 0.0)
    return StripeSimulatorServer(stripe).start()


def grant(stripe: FakeStripe, customers: Iterable[str], features: list[tuple[str, str]] = FEATURES) -> None:
    for customer in customers:
        stripe.set_entitlements(customer, features)


def summary_body(
    customer: str, features: list[tuple[str, str]] = FEATURES, *, complete: bool = True, **fields: Any
) -> bytes:
    """A complete summary event (`has_more: false`) for this customer, as Stripe would send it; `complete=False`:
    one that says Stripe holds more than it shows (`has_more: true`, as past 10 entitlements), so ours fetches."""
    items = [active_entitlement(f, key, entitlement_id=f"ent_{customer}_{f}") for f, key in features]
    body = summary_event(customer, items, **fields)
    body["data"]["object"]["entitlements"]["has_more"] = not complete
    return json.dumps(body).encode()


def subscription_body(customer: str) -> bytes:
    """A `customer.subscription.updated` event for this customer's one subscription (Stripe's own shape: expanded
    items and prices, decimal strings), as a plan change sends: ours mirrors it and fetches the entitlements."""
    sub = subscription(f"sub_{customer}", customer, prices=[("price_bench_pro", "prod_bench_pro")])
    return json.dumps(event("customer.subscription.updated", sub, previous_attributes={"items": {}})).encode()


class Poster:
    """POSTs signed webhooks on keep-alive connections, one per thread; `post` is thread-safe."""

    def __init__(self, url: str) -> None:
        self._target = urlsplit(url)
        self._local = threading.local()
        self.statuses: dict[int, int] = {}
        self._lock = threading.Lock()

    def post(self, body: bytes) -> int:
        headers = {"Stripe-Signature": sign(body, SECRET), "Content-Type": "application/json"}
        for _ in range(2):  # a kept-alive connection the server closed is opened again once
            connection = self._connection()
            try:
                connection.request("POST", "/webhooks/stripe", body=body, headers=headers)
                response = connection.getresponse()
                response.read()
                status = response.status
                break
            except (OSError, http.client.HTTPException):
                connection.close()
                self._local.connection = None
                status = 0
        with self._lock:
            self.statuses[status] = self.statuses.get(status, 0) + 1
        return status

    def post_all(self, bodies: list[bytes], threads: int = 32) -> None:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(self.post, bodies))

    def _connection(self) -> http.client.HTTPConnection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = http.client.HTTPConnection(self._target.netloc, timeout=30)
            self._local.connection = connection
        return connection
