"""A kept-alive connection whose request body was read to its end skips gunicorn's drain (nothing is left to
drain); any other one still goes through it."""

from __future__ import annotations

import socket
from types import SimpleNamespace

from gunicorn.config import Config
from gunicorn.http.parser import RequestParser

from entitlement_sync.gunicorn_hooks import _body_read_to_its_end, drained_already

HEAD = b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\n"


def connection_with(request: bytes) -> tuple[SimpleNamespace, object]:
    """A connection as gthread holds it (its parser over a socket), and the request parsed from it."""
    ours, theirs = socket.socketpair()
    theirs.sendall(request)
    parser = RequestParser(Config(), ours, ("127.0.0.1", 1234))
    return SimpleNamespace(parser=parser, sock=ours), next(parser)


def test_a_body_of_stated_length_read_to_its_end_leaves_nothing_to_drain():
    conn, request = connection_with(HEAD + b"Content-Length: 5\r\n\r\nhello")
    assert not _body_read_to_its_end(conn)
    assert request.body.read(4) == b"hell"
    assert not _body_read_to_its_end(conn)
    assert request.body.read(1) == b"o"
    assert _body_read_to_its_end(conn)


def test_a_body_partly_read_by_lines_is_not_read_to_its_end_while_its_buffer_holds_some():
    conn, request = connection_with(HEAD + b"Content-Length: 6\r\n\r\nab\ncd\n")
    assert request.body.readline(3) == b"ab\n"
    assert not _body_read_to_its_end(conn)


def test_a_chunked_body_is_left_to_gunicorns_drain():
    conn, request = connection_with(HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    assert request.body.read(10) == b"hello"
    assert not _body_read_to_its_end(conn)


def test_after_a_body_read_to_its_end_the_next_request_on_the_connection_is_parsed_whole():
    first = HEAD + b"Content-Length: 5\r\n\r\nhello"
    conn, request = connection_with(first + HEAD + b"Content-Length: 3\r\n\r\nbye")
    assert request.body.read(5) == b"hello"

    assert drained_already(conn)
    following = next(conn.parser)
    assert (following.method, following.path, following.body.read(10)) == ("POST", "/webhooks/stripe", b"bye")


def test_a_body_left_unread_is_not_taken_for_drained():
    conn, _ = connection_with(HEAD + b"Content-Length: 5\r\n\r\nhello")
    assert not drained_already(conn)
    assert conn.parser.mesg is not None
