"""Parsers of the raw values that `Settings.from_env` reads: comma lists, flags, retention windows, and the
access webhooks' subscribers. A malformed value raises ValueError (never echoing a secret)."""

from __future__ import annotations

import base64
import binascii
from datetime import timedelta
from urllib.parse import urlsplit

from .ports import WebhookSubscriber
from .redaction import without_password


def split(raw: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (raw or "").split(",") if part.strip())


def flag(raw: str | None) -> bool:
    value = (raw or "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"expected true or false, got {raw!r}")


def retention_days(raw: str | None) -> int | None:
    if not raw:
        return None
    from .prune import check_window  # the one rule for the window, shared with `events prune`

    days = int(raw)
    try:
        check_window(timedelta(days=days))
    except ValueError as error:
        raise ValueError(f"INBOX_RETENTION_DAYS={raw}: {error}") from None
    return days


def feed_retention_days(raw: str | None, default: int | None) -> int | None:
    """A whole number of days (1 or more), or `off` to keep the feed for ever."""
    if not raw:
        return default
    if raw.strip().lower() == "off":
        return None
    days = int(raw)
    if days < 1:
        raise ValueError(f"ACCESS_FEED_RETENTION_DAYS={raw}: give 1 or more days, or `off`")
    return days


def parse_webhook_subscribers(raw: str | None) -> tuple[WebhookSubscriber, ...]:
    """`https://a.example/hook|whsec_…,https://b.example/hook|whsec_…`: a URL and its Standard Webhooks secret
    per entry. A malformed entry stops start-up naming it (by position: the secret must never be echoed)."""
    subscribers: list[WebhookSubscriber] = []
    for position, entry in enumerate(split(raw), start=1):
        url, separator, secret = (part.strip() for part in entry.partition("|"))
        problem = _subscriber_problem(url, separator, secret)
        if problem is None and any(known.url == url for known in subscribers):
            problem = "the same URL twice (a subscriber is known by its URL)"
        if problem:
            raise ValueError(
                f"ACCESS_WEBHOOK_URLS: entry {position} ({without_password(url) or 'empty'}): {problem}; "
                "expected https://host/path|whsec_<base64>, entries separated by commas"
            )
        subscribers.append(WebhookSubscriber(url, secret))
    return tuple(subscribers)


def _subscriber_problem(url: str, separator: str, secret: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "the URL must be http(s)://host/…"
    if not separator:
        return "no `|whsec_…` signing secret after the URL"
    body = secret.removeprefix("whsec_")
    if body == secret:
        return "the secret must start with whsec_"
    try:
        key = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        return "the secret after whsec_ is not base64"
    return None if key else "the secret is empty"
