"""The body deadline over a real socket pair: a trickled body is cut off at the deadline, a prompt one is not;
and a kept-alive connection keeps its thread only while its next request is on its way."""

import io
import socket
import threading
from types import SimpleNamespace

import pytest

from entitlement_sync.gunicorn_hooks import _next_request
from entitlement_sync.web.slow_clients import BodyDeadline, BodyTooSlow, Watchdog


class LoopingReader:
    """Reads as gunicorn's body reader does: recv after recv until it has `size` bytes (or EOF)."""

    def __init__(self, connection):
        self.connection = connection

    def read(self, size=-1):
        data = b""
        while size < 0 or len(data) < size:
            chunk = self.connection.recv(4096)
            if not chunk:
                break
            data += chunk
        return data


def read_through_deadline(seconds, send):
    server, client = socket.socketpair()
    sender = threading.Thread(target=send, args=(client,), daemon=True)
    sender.start()
    seen = {}

    def app(environ, start_response):
        seen["body"] = environ["wsgi.input"].read(100)
        return []

    environ = {"gunicorn.socket": server, "wsgi.input": LoopingReader(server), "CONTENT_LENGTH": "100"}
    try:
        BodyDeadline(app, seconds, Watchdog())(environ, lambda *args: None)
    finally:
        client.close()
        server.close()
    return seen["body"]


def test_a_body_trickled_past_the_deadline_is_cut_off():
    stop = threading.Event()

    def trickle(client):
        while not stop.wait(0.05):
            try:
                client.sendall(b"x")
            except OSError:
                return

    with pytest.raises(BodyTooSlow):
        read_through_deadline(0.5, trickle)  # 100 bytes would take 5 s; the deadline is 0.5 s
    stop.set()


def test_a_body_sent_in_time_is_read_whole():
    assert read_through_deadline(5, lambda client: client.sendall(b"y" * 100)) == b"y" * 100


def test_a_request_without_a_body_is_not_watched():
    server, client = socket.socketpair()
    reader = LoopingReader(server)
    seen = {}

    def app(environ, start_response):
        seen["input"] = environ["wsgi.input"]
        return []

    for framing in ({}, {"CONTENT_LENGTH": "0"}):
        BodyDeadline(app, 5, Watchdog())({"gunicorn.socket": server, "wsgi.input": reader, **framing}, None)
        assert seen["input"] is reader
    BodyDeadline(app, 5, Watchdog())(
        {"gunicorn.socket": server, "wsgi.input": reader, "HTTP_TRANSFER_ENCODING": "chunked"}, None
    )
    assert seen["input"] is not reader
    client.close()
    server.close()


def test_a_thread_serves_on_only_a_connection_whose_next_request_has_begun():
    """gunicorn_hooks.ThreadWorker asks this after each answer on a kept-alive connection: yes when the next
    request's bytes are on the socket or already read ahead, no when the client says nothing (the connection
    then goes back to gunicorn's poller, and the thread to other clients)."""
    server, client = socket.socketpair()
    read_ahead = io.BytesIO()
    connection = SimpleNamespace(sock=server, parser=SimpleNamespace(unreader=SimpleNamespace(buf=read_ahead)))
    try:
        assert not _next_request(connection)
        read_ahead.write(b"POST /webhooks/stripe HTTP/1.1\r\n")
        assert _next_request(connection)
        read_ahead.seek(0)
        read_ahead.truncate()
        client.sendall(b"POST /webhooks/stripe HTTP/1.1\r\n")
        assert _next_request(connection)
    finally:
        client.close()
        server.close()
