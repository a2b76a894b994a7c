"""Log in with OPS_CONSOLE_TOKEN, log out."""

from __future__ import annotations

from flask import redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue

from ...logs import get_logger
from .guard import console, logged_in, start_session, token_matches

log = get_logger(__name__)


def _safe_next(target: str | None) -> str:
    """Only a path inside the console: never another site (`//evil`, `https://…`)."""
    if target and target.startswith("/console") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("console.overview")


@console.get("/login")
def login() -> ResponseReturnValue:
    if logged_in():
        return redirect(_safe_next(request.args.get("next")))
    return render_template("console/login.html", next=request.args.get("next", ""))


@console.post("/login")
def login_submit() -> ResponseReturnValue:
    if not token_matches(request.form.get("token", "")):
        log.warning("console.login_refused", remote=request.remote_addr)
        page = render_template("console/login.html", next=request.form.get("next", ""), refused=True)
        return page, 401
    start_session()
    log.info("console.login", remote=request.remote_addr)
    return redirect(_safe_next(request.form.get("next")))


@console.post("/logout")
def logout() -> ResponseReturnValue:
    session.clear()
    return redirect(url_for("console.login"))
