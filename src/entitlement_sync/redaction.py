"""What configuration may show of itself: secrets redacted in the settings' repr, and URLs without their
credentials (they go into logs and metric labels)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .ports import WebhookSubscriber

# Settings' fields shown as "<redacted>" (keys keep their prefix, URLs all but the password) by repr() and str().
_SECRETS = (
    "stripe_api_key",
    "webhook_secrets",
    "access_api_tokens",
    "ops_console_token",
    "ops_console_secret_key",
    "access_webhooks",
)
_URLS = ("database_url", "redis_url")
_KEY_PREFIXES = ("sk_live_", "sk_test_", "rk_live_", "rk_test_", "whsec_")


def redacted(name: str, value: Any) -> Any:
    if isinstance(value, WebhookSubscriber):
        return f"{without_password(value.url)}|whsec_<redacted>"
    if name in _URLS:
        return without_password(value)
    if name not in _SECRETS:
        return value
    if isinstance(value, tuple):
        return tuple(redacted(name, item) for item in value)
    if not value:
        return value
    prefix = next((known for known in _KEY_PREFIXES if value.startswith(known)), "")
    return f"{prefix}<redacted>"


# Query parameters whose values are credentials in the URLs people configure (webhook receivers, databases).
_SECRET_PARAMETERS = ("password", "token", "secret", "key", "sig", "auth", "code")


def without_password(url: str) -> str:
    """The URL with its password (in the authority, or a query parameter named like a credential: `password`,
    `token`, `api_key`, `signature`...) replaced by ***: it goes into logs and metric labels."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        user_info, _, host = netloc.rpartition("@")
        netloc = f"{user_info.partition(':')[0]}:***@{host}"
    query = [(key, "***" if _names_a_secret(key) else value) for key, value in parse_qsl(parts.query, True)]
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query, safe="*")))


def _names_a_secret(parameter: str) -> bool:
    return any(word in parameter.lower() for word in _SECRET_PARAMETERS)
