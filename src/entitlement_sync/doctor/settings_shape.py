"""`doctor`'s checks of the settings themselves: present, and of the shape Stripe, SQLAlchemy and Redis expect.

Secrets are never echoed: a finding names the variable and, for a list, the position of the bad value.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from ..settings import Settings
from .findings import KEY_FIX, Finding, Level

STRIPE_API = "https://api.stripe.com"


def check_settings(settings: Settings) -> list[Finding]:
    return [
        _api_key(settings),
        _webhook_secrets(settings),
        _api_base(settings),
        _database_url(settings),
        _redis_url(settings),
        _access_tokens(settings),
    ]


def _api_key(settings: Settings) -> Finding:
    key, name = settings.stripe_api_key, "STRIPE_API_KEY"
    if not key:
        return Finding(name, Level.PROBLEM, "not set", KEY_FIX)
    kind = {"sk_": "secret key", "rk_": "restricted key"}.get(key[:3])
    if kind is None:
        what = "a publishable key (pk_), which cannot read the API" if key.startswith("pk_") else "not a Stripe key"
        return Finding(name, Level.PROBLEM, f"{what}: it must start with sk_ or rk_", KEY_FIX)
    if settings.livemode is None:
        return Finding(name, Level.PROBLEM, f"a {kind} of neither test nor live mode (no _test_/_live_)", KEY_FIX)
    mode = "live" if settings.livemode else "test"
    return Finding(name, Level.OK, f"{kind}, {mode} mode: {mode}-mode events are processed, the others ignored")


def _webhook_secrets(settings: Settings) -> Finding:
    name, secrets = "STRIPE_WEBHOOK_SECRETS", settings.webhook_secrets
    fix = "set it to the endpoint's signing secret(s), whsec_..., comma-separated (Dashboard > Webhooks)"
    if not secrets:
        return Finding(name, Level.PROBLEM, "not set: `serve` cannot verify any webhook", fix)
    bad = [str(position) for position, secret in enumerate(secrets, start=1) if not secret.startswith("whsec_")]
    if bad:
        return Finding(name, Level.PROBLEM, f"secret(s) at position {', '.join(bad)} do not start with whsec_", fix)
    rolling = " (two or more: a secret is being rolled)" if len(secrets) > 1 else ""
    return Finding(name, Level.OK, f"{len(secrets)} secret(s){rolling}")


def _api_base(settings: Settings) -> Finding:
    url = urlsplit(settings.stripe_api_base)
    if url.scheme not in ("http", "https") or not url.netloc:
        fix = f"leave STRIPE_API_BASE unset ({STRIPE_API}) outside tests"
        return Finding("STRIPE_API_BASE", Level.PROBLEM, "not an http(s) URL", fix)
    if settings.stripe_api_base.rstrip("/") != STRIPE_API:
        detail = f"{url.scheme}://{url.netloc}: not Stripe's API (a simulator?)"
        return Finding("STRIPE_API_BASE", Level.WARNING, detail, f"unset it in production ({STRIPE_API})")
    return Finding("STRIPE_API_BASE", Level.OK, STRIPE_API)


def _database_url(settings: Settings) -> Finding:
    name = "DATABASE_URL"
    fix = "set DATABASE_URL, e.g. postgresql+psycopg://user:password@host/database"
    if not settings.database_url_given:
        return Finding(name, Level.PROBLEM, "not set (the SQLite default is for `dev` and `demo` only)", fix)
    try:
        url = make_url(settings.database_url)
    except ArgumentError:
        return Finding(name, Level.PROBLEM, "not a database URL SQLAlchemy can parse", fix)
    shown = url.render_as_string(hide_password=True)
    if url.get_backend_name() == "sqlite":
        return Finding(name, Level.WARNING, f"{shown}: SQLite suits one host and few writers", fix)
    return Finding(name, Level.OK, shown)


def _redis_url(settings: Settings) -> Finding:
    if not settings.redis_url:  # only `dev` and the tests build settings without it: an in-memory broker
        return Finding("REDIS_URL", Level.OK, "not used: an in-memory broker in this process")
    try:
        url = urlsplit(settings.redis_url)
        url.port  # noqa: B018 (raises ValueError on a port that is not a number)
    except ValueError:
        url = urlsplit("")
    if url.scheme not in ("redis", "rediss", "unix"):
        fix = "set REDIS_URL, e.g. redis://host:6379/0"
        return Finding("REDIS_URL", Level.PROBLEM, "not a redis://, rediss:// or unix:// URL", fix)
    port = f":{url.port}" if url.port else ""
    return Finding("REDIS_URL", Level.OK, f"{url.scheme}://{url.hostname or ''}{port}{url.path}")


def _access_tokens(settings: Settings) -> Finding:
    if not settings.access_api_tokens:
        detail = "none: the HTTP read API refuses every request (SQL and Python readers are unaffected)"
        return Finding("ACCESS_API_TOKENS", Level.WARNING, detail, "set bearer tokens if services read over HTTP")
    return Finding("ACCESS_API_TOKENS", Level.OK, f"{len(settings.access_api_tokens)} token(s)")
