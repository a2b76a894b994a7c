"""Outbound HTTP to access-webhook subscribers: the one home of the POST (`requests`) and of its signature
(`standardwebhooks`, the Standard Webhooks reference library).

A subscriber that hangs holds the worker thread at most the timeout (to connect, and per read); a redirect is
not followed and counts as a failure (as Stripe counts one against us).
"""

from __future__ import annotations

import math
import threading
from datetime import UTC, datetime

import requests
from standardwebhooks import Webhook

from .ports import PostOutcome, WebhookSubscriber

USER_AGENT = "entitlement-sync-webhooks/1"
_ERROR_SNIPPET = 200  # bytes of a refusal's body kept on the row, to say why


def signed_headers(secret: str, message_id: str, body: str, timestamp: datetime) -> dict[str, str]:
    """`webhook-id`, `webhook-timestamp` and `webhook-signature` (v1: base64 HMAC-SHA256 of id.timestamp.body)."""
    moment = timestamp.astimezone(UTC)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(math.floor(moment.timestamp())),
        "webhook-signature": Webhook(secret).sign(message_id, moment, body),
    }


class SignedPoster:
    """The WebhookPoster port over `requests`: one pooled HTTP session per thread."""

    def __init__(self, timeout_seconds: float) -> None:
        self._timeout = timeout_seconds
        self._local = threading.local()

    def _http(self) -> requests.Session:
        http: requests.Session | None = getattr(self._local, "http", None)
        if http is None:
            http = self._local.http = requests.Session()
        return http

    def post(self, subscriber: WebhookSubscriber, message_id: str, body: str, timestamp: datetime) -> PostOutcome:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            **signed_headers(subscriber.secret, message_id, body, timestamp),
        }
        try:
            with self._http().post(
                subscriber.url,
                data=body.encode(),
                headers=headers,
                timeout=(self._timeout, self._timeout),
                allow_redirects=False,
                stream=True,  # read at most a snippet of the answer: a subscriber cannot make us download
            ) as response:
                if 200 <= response.status_code < 300:
                    return PostOutcome(response.status_code)
                return PostOutcome(response.status_code, f"HTTP {response.status_code}: {_snippet(response)}".strip())
        except requests.Timeout:
            return PostOutcome(None, f"timed out after {self._timeout:g} s")
        except requests.RequestException as error:
            return PostOutcome(None, f"{type(error).__name__}: {str(error)[:_ERROR_SNIPPET]}")


def _snippet(response: requests.Response) -> str:
    try:
        return bytes(response.raw.read(_ERROR_SNIPPET, decode_content=True)).decode(errors="replace")
    except Exception:  # a body that times out or breaks off says nothing more than its status
        return ""
