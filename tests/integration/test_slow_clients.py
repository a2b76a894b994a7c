"""The body deadline over a real socket pair: a trickled body is cut off at the deadline, a prompt one is not."""

import socket
import threading

import pytest

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
