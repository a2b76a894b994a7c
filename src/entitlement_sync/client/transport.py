"""How the client reaches the service: GET with a bearer token, JSON back, over `urllib3` (already installed
with `requests`): the client runs inside other services and must not pull in Flask or SQLAlchemy."""

from __future__ import annotations

import json
from typing import Any, Protocol

import urllib3


class TransportError(Exception):
    """The service could not be reached or did not answer in time."""


class Transport(Protocol):
    def get(self, path: str, params: dict[str, Any], timeout: float) -> tuple[int, Any]:
        """(HTTP status, the JSON body or None). Raises TransportError when there is no answer."""

    def close(self) -> None: ...


class Urllib3Transport:
    """One connection pool; no retries of its own (the client paces its retries and says it is unreachable)."""

    def __init__(self, url: str, token: str, connect_timeout: float = 5.0) -> None:
        self._base = url.rstrip("/")
        self._pool = urllib3.PoolManager(
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"}, retries=False
        )
        self._connect_timeout = connect_timeout

    def get(self, path: str, params: dict[str, Any], timeout: float) -> tuple[int, Any]:
        try:
            response = self._pool.request(
                "GET",
                f"{self._base}{path}",
                fields={name: str(value) for name, value in params.items()},
                timeout=urllib3.Timeout(connect=self._connect_timeout, read=timeout),
            )
        except urllib3.exceptions.HTTPError as error:
            raise TransportError(str(error)) from error
        try:
            body = json.loads(response.data) if response.data else None
        except ValueError:
            body = None
        return response.status, body

    def close(self) -> None:
        self._pool.clear()
