"""The ops console: a few server-rendered pages at /console for the on-call engineer (overview, events,
customers), behind OPS_CONSOLE_TOKEN. It belongs on the internal port, never on the public one.

Off unless the token is set: then nothing is mounted and /console is a 404 like any unknown path.
"""

from __future__ import annotations

from flask import Flask

from ...bootstrap import Container
from . import auth, pages  # noqa: F401  (they add their routes to the blueprint)
from .guard import configure_session, console


def install(app: Flask) -> None:
    """Mount the console on an app that serves the internal surface (the read API's), and only when a token is
    configured: the public surface, which faces Stripe and the internet, never gets it."""
    container: Container = app.extensions["entitlement_sync"]
    if "access" not in app.blueprints or not container.settings.ops_console_token:
        return
    configure_session(app, container.settings)
    app.register_blueprint(console)


__all__ = ["console", "install"]
