"""`serve` as production runs it (gunicorn, two ports, threaded workers): the public port answers nothing
but webhooks and /healthz whatever the Host header says, and slow clients holding connections do not keep
Stripe's webhooks waiting."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from entitlement_sync.testing import active_entitlement, summary_event
from tests.e2e.harness import READ_TOKEN

pytestmark = pytest.mark.e2e
AUTH = {"Authorization": f"Bearer {READ_TOKEN}"}
INTERNAL_PATHS = ["/v1/customers/cus_1/entitlements", "/metrics", "/readyz"]


def a_webhook(customer: str) -> bytes:
    return json.dumps(summary_event(customer, [active_entitlement("feat_api", "api_access")])).encode()


def test_the_public_port_serves_webhooks_only_and_the_internal_port_the_rest(service):
    service.start_web(workers=1)
    assert service.deliver(a_webhook("cus_surface")).json()["status"] == "accepted"
    for path in INTERNAL_PATHS:
        spoofed = {**AUTH, "Host": f"127.0.0.1:{service.internal_port}"}
        assert service.http.get(f"{service.url}{path}", headers=spoofed, timeout=5).status_code == 404, path
        assert service.http.get(f"{service.internal_url}{path}", headers=AUTH, timeout=5).status_code == 200, path
    assert service.http.post(f"{service.internal_url}/webhooks/stripe", data=b"{}", timeout=5).status_code == 404
    metrics = service.http.get(f"{service.internal_url}/metrics", timeout=5).text
    assert 'entitlement_sync_events{status="queued"} 1.0' in metrics


class SlowClient:
    """A raw connection that sends part of a request, then only a byte now and then (or nothing)."""

    def __init__(self, port: int, opening: bytes, trickle: bytes = b"", every: float = 0.5) -> None:
        self.connection = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.connection.sendall(opening)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, args=(trickle, every), daemon=True)
        self._thread.start()

    def _trickle(self, trickle: bytes, every: float) -> None:
        for byte in trickle:
            if self._stop.wait(every):
                return
            try:
                self.connection.sendall(bytes([byte]))
            except OSError:
                return

    def answer(self) -> bytes:
        return self.connection.recv(4096)

    def close(self) -> None:
        self._stop.set()
        self.connection.close()


def test_slow_clients_holding_connections_do_not_keep_webhooks_waiting(service):
    # One process, the default 16 threads; bodies must arrive within 3 s (10 s by default).
    service.start_web(1, "--body-timeout", "3")
    body_head = b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    slow = [
        SlowClient(service.port, b""),  # connects, says nothing
        SlowClient(service.port, b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\n", trickle=b"X-Slow: " + b"a" * 20),
        SlowClient(service.port, body_head + b'Content-Length: 5000\r\n\r\n{"id": ', trickle=b"x" * 60),
        SlowClient(service.port, body_head + b"Content-Length: 5000\r\n\r\n{"),  # then nothing at all
    ]
    try:
        time.sleep(0.5)  # let every slow client reach a worker thread first
        answers = [service.deliver(a_webhook(f"cus_busy_{n}")) for n in range(20)]
        assert {(answer.status_code, answer.json()["status"]) for answer in answers} == {(200, "accepted")}
        # The body deadline gives the threads back, even to a client that keeps trickling: 408, not silence.
        assert slow[3].answer().startswith(b"HTTP/1.1 408")
        assert slow[2].answer().startswith(b"HTTP/1.1 408")
    finally:
        for client in slow:
            client.close()
    assert service.http.get(f"{service.url}/healthz", timeout=5).ok
