"""`FakeStripe`, a simulated Stripe account, and `StripeSimulatorServer`, an HTTP server in front of it.

`FakeStripe.handle()` is the whole API logic; the server and the `responses` mock in our tests are two
transports over it, so both answer alike.

    stripe = FakeStripe()
    api = stripe.create_feature("api_access")
    pro = stripe.create_product([api])
    stripe.subscribe("cus_1", [pro])
    with StripeSimulatorServer(stripe) as server:   # STRIPE_API_BASE=server.url
        ...
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from . import api, shapes
from .faults import ApiFaults
from .model import BillingModel

Query = dict[str, list[str]]
Answer = tuple[int, dict[str, str], dict[str, Any]]
RequestHook = Callable[[str, str, Query], None]


@dataclass(frozen=True)
class Call:
    """One API request as the simulator answered it; `at` is the simulator's clock when it arrived."""

    method: str
    path: str
    query: Query
    status: int
    at: float


class FakeStripe(BillingModel):
    """A simulated Stripe account: the model (see `BillingModel`), its API (`handle`), faults and a call log.

    - `faults`: an `ApiFaults` (shares of 429/5xx, slow answers, timeouts, a rate limit), seeded by `seed`;
    - `calls` / `calls_to(path)`: every API request with the status it got and when it arrived (`clock`);
    - `add_request_hook(hook)`: `hook(method, path, query)` runs as each request arrives, before it is answered;
    - `events`: the event log, which `GET /v1/events` serves and a `WebhookSender` delivers.

    Customers never created and never deleted are answered as existing with nothing granted.
    """

    def __init__(
        self, api_key: str = "sk_test_simulator", *, seed: int = 0, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(clock)
        self.api_key = api_key
        self.faults = ApiFaults(seed)
        self.calls: list[Call] = []
        self._hooks: list[RequestHook] = []
        self._calls_lock = threading.Lock()
        self._other_accounts: dict[str, BillingModel] = {}

    def add_key_of_another_account(self, api_key: str) -> str:
        """Accept `api_key` as the key of another account, which has none of this one's customers (a wrong
        STRIPE_API_KEY): its requests get 404 for every customer, empty lists, and that account's id. Returns it.
        """
        other = BillingModel(self.clock)
        other.lenient_customers = False
        self._other_accounts[api_key] = other
        return other.account_id

    def truth(self, customer_id: str) -> set[tuple[str, str]]:
        """What Stripe says the customer has: {(feature id, lookup key)}."""
        if customer_id in self.deleted_customers:
            return set()
        return set(self.entitled_features(customer_id))

    def fail_next(self, status: int, times: int = 1, *, headers: dict[str, str] | None = None) -> None:
        """Answer the next `times` API requests with this HTTP status, in Stripe's error shape."""
        self.faults.fail_next(status, times, headers=headers)

    def calls_to(self, path: str) -> list[Call]:
        with self._calls_lock:
            return [call for call in self.calls if call.path == path]

    def add_request_hook(self, hook: RequestHook) -> None:
        """Run `hook(method, path, query)` as each request arrives, in the thread that handles it: over
        `responses` that is the caller's own thread, so a hook may stage a race or raise KeyboardInterrupt
        as Ctrl-C would. What it raises propagates instead of an answer, and the request is not logged."""
        with self._calls_lock:
            self._hooks.append(hook)

    def remove_request_hook(self, hook: RequestHook) -> None:
        with self._calls_lock:
            self._hooks.remove(hook)

    def handle(self, method: str, path: str, query: Query, headers: dict[str, str]) -> Answer:
        """Answer one API request: (HTTP status, headers, JSON body). Both transports call only this."""
        arrived = self.clock()
        with self._calls_lock:
            hooks = list(self._hooks)
        for hook in hooks:
            hook(method, path, query)
        status, answer_headers, body = self._answer(method, path, query, headers)
        # Stamped once the answer is read, on the clock that stamps events' `created`, as Stripe's servers do.
        date = formatdate(self.clock(), usegmt=True)
        with self._calls_lock:
            self.calls.append(Call(method, path, query, status, arrived))
        return status, {"Request-Id": shapes.new_id("req"), "Date": date, **answer_headers}, body

    def _answer(self, method: str, path: str, query: Query, headers: dict[str, str]) -> Answer:
        authorization = {key.lower(): value for key, value in headers.items()}.get("authorization", "")
        api_key = authorization.removeprefix("Bearer ")
        model = self if api_key == self.api_key else self._other_accounts.get(api_key)
        if model is None:
            return 401, {}, shapes.error_body("invalid_request_error", "Invalid API Key provided")
        fault = self.faults.before_answering()
        if fault is not None:
            return fault
        found = api.route(method, path)
        if found is None:
            return api.unrecognised(method, path)
        handler, path_ids = found
        if handler is api.retrieve_account and api_key.startswith("rk_"):
            return api.restricted_key_refused(model, api_key)
        return handler(model, query, path_ids)


class StripeSimulatorServer:
    """Serves a FakeStripe over HTTP on 127.0.0.1 and a free port: `STRIPE_API_BASE=server.url`."""

    def __init__(self, stripe: FakeStripe, host: str = "127.0.0.1", port: int = 0) -> None:
        self.stripe = stripe
        self._host = host
        handler = type("Handler", (_Handler,), {"stripe": stripe})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        # A short poll interval: stop() waits out one poll, and tests start and stop many servers.
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="stripe-simulator", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self._server.server_port}"

    def start(self) -> StripeSimulatorServer:
        self.stripe.faults.allow_sleepers()
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stripe.faults.release_sleepers()  # requests sleeping in a slow or timeout fault end now
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> StripeSimulatorServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    stripe: FakeStripe
    protocol_version = "HTTP/1.1"
    # The headers and the body go out in two writes. With Nagle's algorithm on, the second waits for the client's
    # ACK of the first, which Linux delays up to 40 ms: every call took 45 ms more than the latency it was set to.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        self._answer("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._answer("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._answer("DELETE")

    def _answer(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)  # unread bodies would corrupt the next request on a kept-alive connection
        url = urlsplit(self.path)
        query = parse_qs(url.query, keep_blank_values=True)
        status, headers, body = self.stripe.handle(method, url.path, query, dict(self.headers))
        payload = json.dumps(body).encode()
        try:
            self.send_response_only(status)  # not send_response: its Date is the server's, not the model's clock
            for name, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (its timeout fired during an injected timeout)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass
