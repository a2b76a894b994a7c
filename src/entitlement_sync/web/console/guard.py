"""Who may see the console: a login with OPS_CONSOLE_TOKEN, then a signed session cookie; every POST carries
the session's CSRF token in a hidden field; every answer tells the browser not to cache, frame or leak it."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from flask import Blueprint, Flask, abort, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from ...settings import Settings
from .._container import container

console = Blueprint("console", __name__, url_prefix="/console", template_folder="templates")

SESSION_LIFETIME = timedelta(hours=12)
OPEN_ENDPOINTS = {"console.login", "console.login_submit"}  # reachable without a login (still CSRF-checked on POST)
SECURITY_HEADERS = {
    # No script at all; styles are inline in the page; images are the page's own inline SVG.
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _derive(secret: str, purpose: str) -> str:
    return hmac.new(secret.encode(), f"entitlement-sync console: {purpose}".encode(), hashlib.sha256).hexdigest()


def configure_session(app: Flask, settings: Settings) -> None:
    """Flask's signed cookie session, scoped to /console. Derived from the token when no key is given, so that
    every process signs alike and a new token ends every session."""
    app.secret_key = settings.ops_console_secret_key or _derive(settings.ops_console_token, "session key")
    app.config.update(
        SESSION_COOKIE_NAME="entitlement_sync_console",
        SESSION_COOKIE_PATH="/console",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,
    )


def token_fingerprint() -> str:
    """What the session keeps instead of the token: it changes when the token does."""
    return _derive(container().settings.ops_console_token, "login")


def token_matches(presented: str) -> bool:
    return hmac.compare_digest(presented.encode(), container().settings.ops_console_token.encode())


def logged_in() -> bool:
    return hmac.compare_digest(str(session.get("auth", "")), token_fingerprint())


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return str(session["csrf"])


def start_session() -> None:
    """A fresh session (and CSRF token) at login, so that nothing set before it carries over."""
    session.clear()
    session.permanent = True
    session["auth"] = token_fingerprint()
    session["csrf"] = secrets.token_urlsafe(32)


@console.before_request
def check_request() -> ResponseReturnValue | None:
    if request.method == "POST":
        presented = request.form.get("csrf", "")
        expected = str(session.get("csrf", ""))
        if not expected or not hmac.compare_digest(presented.encode(), expected.encode()):
            abort(400, description="The form's CSRF token is missing or out of date: reload the page and try again.")
    if request.endpoint in OPEN_ENDPOINTS or logged_in():
        return None
    if request.method != "GET":
        abort(401, description="Log in first.")
    return redirect(url_for("console.login", next=request.full_path.rstrip("?")))


@console.after_request
def security_headers(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


@console.app_template_global("csrf_token")
def _csrf_token_global() -> str:
    return csrf_token()


@console.errorhandler(HTTPException)
def error_page(error: HTTPException) -> ResponseReturnValue:
    return render_template("console/error.html", error=error), error.code or 500
