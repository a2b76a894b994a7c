"""The HTTP face: `create_app()` is the only place Flask is imported, one blueprint per concern.

Two surfaces: the public one faces the internet for Stripe (`POST /webhooks/stripe`, `/healthz`, nothing
else); the internal one serves the read API, `/metrics` and `/readyz` to the services beside it. `serve`
binds each to its own port (see `serving.py`); `dev` and the tests may put both on one ("all").
"""

from __future__ import annotations

from typing import Literal

from flask import Blueprint, Flask, jsonify
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from ..bootstrap import Container, bootstrap
from ..errors import StorageUnavailable
from ..logs import configure_logging, get_logger
from ..settings import Settings
from . import console
from .access import ReadRoute, access
from .feed import feed
from .health import health, readiness
from .metrics import metrics
from .webhooks import MAX_BODY_BYTES, WebhookRoute, webhooks

Surface = Literal["public", "internal", "all"]
log = get_logger(__name__)
SURFACES: dict[str, tuple[Blueprint, ...]] = {
    "public": (webhooks, health),
    "internal": (access, feed, metrics, readiness, health),
    "all": (webhooks, access, feed, metrics, readiness, health),
}


def create_app(container: Container | None = None, surface: Surface = "all") -> Flask:
    if container is None:  # the production path (gunicorn): this process is ours to configure
        configure_logging()
        settings = Settings.from_env()
        container = bootstrap(settings, threads=settings.web_threads)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.extensions["entitlement_sync"] = container
    for blueprint in SURFACES[surface]:
        app.register_blueprint(blueprint)
    if access in SURFACES[surface]:  # the internal port's busiest routes, answered in plain WSGI (web/access.py)
        app.wsgi_app = ReadRoute(app.wsgi_app, container)  # type: ignore[method-assign]
    if webhooks in SURFACES[surface]:  # the busiest route, the same way (see web/webhooks.py)
        app.wsgi_app = WebhookRoute(app.wsgi_app, container)  # type: ignore[method-assign]

    @app.errorhandler(StorageUnavailable)
    def database_down(error: StorageUnavailable) -> ResponseReturnValue:
        # 503 makes Stripe deliver again later; nothing was acknowledged, so nothing is lost.
        log.warning("database.unavailable", error=str(error))
        return jsonify(error="database unavailable, try again later"), 503, {"Retry-After": "30"}

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> ResponseReturnValue:
        return jsonify(error=error.description), error.code or 500

    console.install(app)  # after the surfaces: it mounts itself only where the read API is (internal)
    return app
