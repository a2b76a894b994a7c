"""A subscriber of access webhooks, as a customer's service would write one: a small threaded HTTP server on a
free local port that verifies each message with the `standardwebhooks` library, drops redeliveries by
`webhook-id`, and keeps its own copy of who has which feature. It can be taken down (it answers 503) and
brought back, and it notes any customer whose changes arrived out of order.

Shared by the integration tests and the end-to-end test (which checks that its copy ends equal to the table).
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError

SECRET = "whsec_" + base64.b64encode(b"entitlement-sync-test-subscriber").decode()


class Subscriber:
    def __init__(self, secret: str = SECRET, port: int = 0) -> None:
        self.secret = secret
        self._verifier = Webhook(secret)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hooks/access"
        self.entry = f"{self.url}|{secret}"  # for ACCESS_WEBHOOK_URLS
        self.messages: list[tuple[str, dict[str, Any]]] = []  # (webhook-id, payload): new ones, in arrival order
        self.requests = 0  # every POST, refused and redelivered ones included
        self.redeliveries = 0
        self.rejected_signatures = 0
        self.refusing = 0  # answer 503 to this many more requests (-1: until `up()`)
        self.view: dict[tuple[str, str], bool] = {}  # (customer, lookup_key) -> granted
        self.out_of_order: list[tuple[str, int, int]] = []  # (customer, change id before, change id after)
        self._last_change: dict[str, int] = {}
        self.on_request: Callable[[], object] | None = None  # runs first in each request: hold or slow it
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------------------------

    def __enter__(self) -> Subscriber:
        self._thread = threading.Thread(target=self._server.serve_forever, name="test-subscriber", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def down(self) -> None:
        """Answer 503 to everything until `up()`."""
        with self._lock:
            self.refusing = -1

    def fail_next(self, count: int) -> None:
        with self._lock:
            self.refusing = count

    def up(self) -> None:
        with self._lock:
            self.refusing = 0

    # --- what it holds ---------------------------------------------------------------------------------------

    def granted(self) -> set[tuple[str, str]]:
        with self._lock:
            return {key for key, granted in self.view.items() if granted}

    def payloads(self) -> list[dict[str, Any]]:
        with self._lock:
            return [payload for _, payload in self.messages]

    # --- the HTTP side ---------------------------------------------------------------------------------------

    def _answer(self, headers: dict[str, str], body: bytes) -> int:
        if self.on_request is not None:
            self.on_request()
        with self._lock:
            self.requests += 1
            if self.refusing:
                self.refusing -= 1 if self.refusing > 0 else 0
                return 503
        try:
            payload = self._verifier.verify(body, headers)
        except WebhookVerificationError:
            with self._lock:
                self.rejected_signatures += 1
            return 400
        self._apply(headers["webhook-id"], payload)
        return 204

    def _apply(self, message_id: str, payload: dict[str, Any]) -> None:
        with self._lock:
            if any(seen == message_id for seen, _ in self.messages):
                self.redeliveries += 1
                return
            self.messages.append((message_id, payload))
            data = payload["data"]
            self.view[(data["customer"], data["lookup_key"])] = data["change"] == "granted"
            change_id = int(message_id.removeprefix("msg_"))
            last = self._last_change.get(data["customer"], 0)
            if change_id < last:
                self.out_of_order.append((data["customer"], last, change_id))
            self._last_change[data["customer"]] = max(last, change_id)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        subscriber = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802  (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status = subscriber._answer({k.lower(): v for k, v in self.headers.items()}, body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
