"""`serve` as production runs it (gunicorn, two ports, threaded workers): the public port answers nothing
but webhooks and /healthz whatever the Host header says, and slow clients holding connections do not keep
Stripe's webhooks waiting."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from entitlement_sync.testing import active_entitlement, sign, summary_event
from tests.e2e.harness import READ_TOKEN, WEBHOOK_SECRET

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


class KeptAlive:
    """One raw HTTP/1.1 connection that sends signed webhooks one after another and reads each answer."""

    def __init__(self, port: int) -> None:
        self.connection = socket.create_connection(("127.0.0.1", port), timeout=10)
        self._buffer = b""

    def post(self, body: bytes) -> tuple[int, dict]:
        head = "POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        head += f"Stripe-Signature: {sign(body, WEBHOOK_SECRET)}\r\nContent-Length: {len(body)}\r\n\r\n"
        self.connection.sendall(head.encode() + body)
        while b"\r\n\r\n" not in self._buffer:
            self._buffer += self._received()
        headers, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        length = int(next(line for line in headers.split(b"\r\n") if line.lower().startswith(b"content-length:"))[15:])
        while len(self._buffer) < length:
            self._buffer += self._received()
        answer, self._buffer = self._buffer[:length], self._buffer[length:]
        assert b"connection: close" not in headers.lower()
        return int(headers.split(b" ", 2)[1]), json.loads(answer)

    def _received(self) -> bytes:
        chunk = self.connection.recv(65536)
        assert chunk, "the server closed the connection"
        return chunk

    def close(self) -> None:
        self.connection.close()


def test_a_kept_alive_connection_is_answered_request_after_request(service):
    # The thread that answered a kept-alive connection serves the next request it brings at once itself
    # (gunicorn_hooks.ThreadWorker): every one of them is answered, in order, on the same connection.
    service.start_web(1)
    client = KeptAlive(service.port)
    try:
        answers = [client.post(a_webhook(f"cus_kept_{n}")) for n in range(30)]
    finally:
        client.close()
    assert [(status, answer["status"]) for status, answer in answers] == [(200, "accepted")] * 30
    assert len({answer["event"] for _, answer in answers}) == 30


def test_kept_alive_connections_gone_quiet_give_their_threads_back(service):
    # Two threads, two connections that each sent one webhook and then stay open saying nothing: a thread may
    # wait for its connection's next request only briefly, so both are free again for other clients.
    service.start_web(1, "--threads", "2")
    quiet = [KeptAlive(service.port) for _ in range(2)]
    try:
        assert [client.post(a_webhook(f"cus_quiet_{n}"))[0] for n, client in enumerate(quiet)] == [200, 200]
        time.sleep(0.5)  # longer than any wait for a next request: the threads are either free or pinned
        answers = [service.deliver(a_webhook(f"cus_after_quiet_{n}")) for n in range(5)]
        assert {(answer.status_code, answer.json()["status"]) for answer in answers} == {(200, "accepted")}
        # The quiet connections are still open and served when they speak again.
        assert [client.post(a_webhook(f"cus_quiet_again_{n}"))[0] for n, client in enumerate(quiet)] == [200, 200]
    finally:
        for client in quiet:
            client.close()
