"""The unit tier does no I/O: no sockets, no real sleeps, no database. Enforced, not hoped for: a unit test
that reaches for one fails at once, and belongs in tests/integration (or wants a fake, a clock, a sleep)."""

from __future__ import annotations

import socket
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import pytest


def refuse(what: str) -> Callable[..., Any]:
    def refused(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"a unit test may not {what}: inject a fake, or move the test to tests/integration")

    return refused


@pytest.fixture(autouse=True)
def no_io(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket.socket, "connect", refuse("open a connection"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("open a connection"))
    monkeypatch.setattr(socket.socket, "bind", refuse("listen on a socket"))
    monkeypatch.setattr(time, "sleep", refuse("sleep"))
    monkeypatch.setattr(sqlite3, "connect", refuse("open a database"))
