"""Verifying Stripe's webhook signatures (`Stripe-Signature`), with every configured secret."""

from __future__ import annotations

import time

import stripe

from .errors import InvalidWebhook


class WebhookVerifier:
    """Checks `Stripe-Signature` against each configured secret, so a secret can be rolled without downtime."""

    def __init__(self, secrets: tuple[str, ...], tolerance_seconds: int = 300) -> None:
        self._secrets = secrets
        self._tolerance = tolerance_seconds

    def verify(self, payload: bytes, header: str | None, now: float | None = None) -> None:
        if not header:
            raise InvalidWebhook("missing Stripe-Signature header")
        if not self._secrets:
            raise InvalidWebhook("no webhook secret configured (STRIPE_WEBHOOK_SECRETS)")
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError as error:
            raise InvalidWebhook("body is not UTF-8") from error
        reasons = [self._reason_to_refuse(text, header, secret) for secret in self._secrets]
        if None not in reasons:
            raise InvalidWebhook(_most_telling(reasons))
        timestamp = signed_timestamp(header)
        if timestamp > (now or time.time()) + self._tolerance:
            # Stripe's library lets these through; a signed request from the future is a replay setup or a bad clock.
            raise InvalidWebhook("signature timestamp is in the future")

    def _reason_to_refuse(self, payload: str, header: str, secret: str) -> str | None:
        try:
            stripe.WebhookSignature.verify_header(payload, header, secret, tolerance=self._tolerance)
        except stripe.SignatureVerificationError as error:
            message = str(error.user_message or error)
            if "tolerance" in message:
                return "signature timestamp too old"
            if "matching" in message:
                return "signature does not match"
            return "malformed Stripe-Signature header"
        return None


def _most_telling(reasons: list[str | None]) -> str:
    for reason in ("signature timestamp too old", "signature does not match"):
        if reason in reasons:
            return reason
    return "malformed Stripe-Signature header"


def signed_timestamp(header: str) -> int:
    """The `t` of a Stripe-Signature header, read exactly as stripe-python's WebhookSignature reads it (the
    first item whose key is exactly `t`; its value up to any further `=`), so that the time we check is the
    time Stripe's check signed. Call it only on a header that verified."""
    items = [item.split("=", 2) for item in header.split(",")]
    return int([item[1] for item in items if item[0] == "t"][0])
