"""What gunicorn runs: one container per process, the public and the internal app on their own ports, and
a deadline on reading request bodies so that a slow client cannot hold a thread for long (slow_clients.py).

`gunicorn 'entitlement_sync.web.serving:serve_app(internal_port=8001)' --bind :8000 --bind :8001`
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..bootstrap import bootstrap
from ..logs import configure_logging
from ..settings import Settings
from .slow_clients import BodyDeadline

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

# Stripe sends at most a few kilobytes; a body still arriving after this long is a slow or hostile client.
BODY_READ_SECONDS = 10.0


def serve_app(internal_port: int, body_read_seconds: float = BODY_READ_SECONDS) -> WSGIApplication:
    """The production WSGI app: requests that arrived on `internal_port` go to the internal app, any other
    to the public one (so a listener added by mistake exposes the least)."""
    from . import create_app

    configure_logging()
    settings = Settings.from_env()
    container = bootstrap(settings, threads=settings.web_threads)  # a pooled connection for each thread
    public = create_app(container, "public")
    internal = create_app(container, "internal")
    return BodyDeadline(PortDispatcher({internal_port: internal}, default=public), body_read_seconds)


class PortDispatcher:
    """Chooses the app by the local port the connection came in on.

    Not by SERVER_PORT: gunicorn fills that from the Host header, which the client writes, so
    `Host: x:8001` sent to the public port would reach the internal app.
    """

    def __init__(self, apps: dict[int, WSGIApplication], default: WSGIApplication) -> None:
        self._apps = apps
        self._default = default
        # A kept-alive connection brings many requests: its port is asked of the kernel once, not per request.
        self._ports: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        return self._apps.get(self._local_port(environ.get("gunicorn.socket")), self._default)(environ, start_response)

    def _local_port(self, connection: Any) -> int:
        """The port this connection was accepted on; 0 (no app's) when the server does not say."""
        if connection is None:
            return 0
        port = self._ports.get(connection)
        if port is None:
            port = self._ports[connection] = _asked_port(connection)
        return port


def _asked_port(connection: Any) -> int:
    try:
        return int(connection.getsockname()[1])
    except (OSError, IndexError, TypeError, ValueError):
        return 0
