"""The HTTP face: `create_app()` is the only place Flask is imported, one blueprint per concern."""

from __future__ import annotations

from flask import Flask, jsonify
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from ..bootstrap import Container, bootstrap
from ..errors import StorageUnavailable
from ..logs import configure_logging, get_logger
from ..settings import Settings
from . import console
from .access import access
from .health import health
from .metrics import metrics
from .webhooks import MAX_BODY_BYTES, webhooks

log = get_logger(__name__)


def create_app(container: Container | None = None) -> Flask:
    if container is None:  # the production path (gunicorn): this process is ours to configure
        configure_logging()
        settings = Settings.from_env()
        container = bootstrap(settings, threads=settings.web_threads)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.extensions["entitlement_sync"] = container
    app.register_blueprint(webhooks)
    app.register_blueprint(access)
    app.register_blueprint(health)
    app.register_blueprint(metrics)

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
