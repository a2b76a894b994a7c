"""The only module that imports `stripe`: it speaks our vocabulary and turns Stripe's errors into ours."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import stripe

from .errors import InvalidWebhook, StripeRejected, StripeUnavailable

T = TypeVar("T")


@dataclass(frozen=True)
class ActiveEntitlement:
    id: str
    feature_id: str
    lookup_key: str


class StripeGateway:
    """Reads from Stripe's API. Retries nothing itself: the job queue owns retries and their backoff."""

    def __init__(self, api_key: str, api_base: str, timeout_seconds: float) -> None:
        self._client = stripe.StripeClient(
            api_key or "sk_test_missing",
            base_addresses={"api": api_base},
            http_client=stripe.RequestsClient(timeout=timeout_seconds),
            max_network_retries=0,
        )

    def list_active_entitlements(self, customer_id: str) -> list[ActiveEntitlement]:
        """Every active entitlement of the customer; none for a customer Stripe no longer has."""

        def fetch() -> list[ActiveEntitlement]:
            try:
                pages = self._client.v1.entitlements.active_entitlements.list({"customer": customer_id, "limit": 100})
                return [_active_entitlement(item) for item in pages.auto_paging_iter()]
            except stripe.InvalidRequestError as error:
                # A deleted customer is entitled to nothing; Stripe says so with a 404.
                if error.code == "resource_missing" and error.param in (None, "customer"):
                    return []
                raise

        return _translating_errors(fetch)


def _active_entitlement(item: Any) -> ActiveEntitlement:
    feature = item.feature if isinstance(item.feature, str) else item.feature.id
    return ActiveEntitlement(id=item.id, feature_id=feature, lookup_key=item.lookup_key)


def _translating_errors(call: Callable[[], T]) -> T:
    try:
        return call()
    except (stripe.RateLimitError, stripe.APIConnectionError) as error:
        raise StripeUnavailable(_describe(error)) from error
    except stripe.StripeError as error:
        status = error.http_status or 0
        if status == 429 or status >= 500 or status == 409:
            raise StripeUnavailable(_describe(error)) from error
        raise StripeRejected(_describe(error)) from error


def _describe(error: stripe.StripeError) -> str:
    status = f"HTTP {error.http_status}: " if error.http_status else ""
    return f"{type(error).__name__}: {status}{error.user_message or str(error)}".strip()


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
        timestamp = _timestamp(header)
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


def _timestamp(header: str) -> int:
    for part in header.split(","):
        key, _, value = part.partition("=")
        if key.strip() == "t":
            return int(value)
    return 0
