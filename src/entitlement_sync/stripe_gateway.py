"""The only module that imports `stripe`: it speaks our vocabulary and turns Stripe's errors into ours."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, TypeVar

import stripe

from .errors import (
    CustomerNotFound,
    InvalidWebhook,
    StripeAccountUnreadable,
    StripeRejected,
    StripeUnavailable,
)
from .ports import ActiveEntitlement, CatalogFeature, CustomerState, ProductFeatureLink, StripeAccount

T = TypeVar("T")


class StripeGateway:
    """Reads from Stripe's API. Retries nothing itself: the job queue (or the ops use case) owns retries.

    `before_call` runs before every HTTP request: the ops reconcile hands in its rate pacer there.
    """

    def __init__(
        self,
        api_key: str,
        api_base: str,
        timeout_seconds: float,
        before_call: Callable[[], None] | None = None,
    ) -> None:
        self._client = stripe.StripeClient(
            api_key or "sk_test_missing",
            base_addresses={"api": api_base},
            http_client=stripe.RequestsClient(timeout=timeout_seconds),
            max_network_retries=0,
        )
        self._before_call = before_call or (lambda: None)

    def paced(self, before_call: Callable[[], None]) -> StripeGateway:
        """The same client, calling `before_call` (a rate pacer) before each request."""
        twin = object.__new__(StripeGateway)
        twin._client, twin._before_call = self._client, before_call
        return twin

    def list_active_entitlements(self, customer_id: str) -> list[ActiveEntitlement]:
        """Every active entitlement of the customer.

        Raises CustomerNotFound on a 404 for the customer: Stripe answers so for a deleted customer and
        equally for a key of another account or mode, so the caller must ask which (`customer_state`).
        """
        pages = self._client.v1.entitlements.active_entitlements.list
        try:
            items = list(self._each(pages, {"customer": customer_id}))
        except StripeRejected as error:
            cause = error.__cause__
            if isinstance(cause, stripe.InvalidRequestError) and _is_missing(cause, "customer"):
                raise CustomerNotFound(str(error)) from cause
            raise
        return [_active_entitlement(item) for item in items]

    def customer_state(self, customer_id: str) -> CustomerState:
        """`GET /v1/customers/{id}`: a deleted customer is still answered (`deleted: true`); a 404 is unknown."""

        def retrieve() -> Any:
            self._before_call()
            try:
                return self._client.v1.customers.retrieve(customer_id)
            except stripe.InvalidRequestError as error:
                if _is_missing(error, "id", "customer"):
                    return None
                raise

        customer = _translating_errors(retrieve)
        if customer is None:
            return CustomerState.UNKNOWN
        return CustomerState.DELETED if getattr(customer, "deleted", False) else CustomerState.EXISTS

    def retrieve_account(self) -> StripeAccount:
        """`GET /v1/account`: whose key this is. Restricted keys may never ask: StripeAccountUnreadable."""

        def retrieve() -> Any:
            self._before_call()
            try:
                return self._client.v1.accounts.retrieve_current()
            except stripe.PermissionError as error:
                raise StripeAccountUnreadable(_describe(error)) from error

        account = _translating_errors(retrieve)
        profile = getattr(account, "business_profile", None)
        settings = getattr(account, "settings", None)
        dashboard = getattr(settings, "dashboard", None) if settings else None
        name = getattr(dashboard, "display_name", None) or (getattr(profile, "name", None) if profile else None)
        return StripeAccount(id=account.id, name=name)

    def list_one_customer(self) -> str | None:
        """The id of the newest customer of the account, or None: a cheap proof that the key reads customers."""
        page = _translating_errors(partial(self._page, self._client.v1.customers.list, {"limit": 1}, None))
        return page.data[0].id if page is not None and page.data else None

    def list_events(self, types: list[str], created_gte: int, undelivered: bool) -> Iterator[dict[str, Any]]:
        """Events from the Events API (the last 30 days only), newest first, as the JSON a webhook carries."""
        params: dict[str, Any] = {"types": sorted(types), "created": {"gte": created_gte}}
        if undelivered:
            params["delivery_success"] = False
        for item in self._each(self._client.v1.events.list, params):
            yield _as_sent(item)

    def list_subscription_customers(self) -> Iterator[str]:
        """The customer of every subscription, in any status (a canceled one may still hold a grant here)."""
        for item in self._each(self._client.v1.subscriptions.list, {"status": "all"}):
            yield item.customer if isinstance(item.customer, str) else item.customer.id

    def list_features(self) -> list[CatalogFeature]:
        """The whole catalog: active and archived features (archived ones still grant access)."""
        listing = self._client.v1.entitlements.features.list
        return [_feature(item) for archived in (False, True) for item in self._each(listing, {"archived": archived})]

    def list_product_features(self, product_id: str) -> list[ProductFeatureLink]:
        """The features attached to a product; none for a product Stripe no longer has."""

        def listing(params: Any) -> Any:
            return self._client.v1.products.features.list(product_id, params)

        items = self._each(listing, {}, missing_param="id")
        return [ProductFeatureLink(item.id, product_id, _feature(item.entitlement_feature)) for item in items]

    def _each(
        self, listing: Callable[..., Any], params: dict[str, Any], *, missing_param: str | None = None
    ) -> Iterator[Any]:
        """Every item of a paginated list, one page per request, so each request is paced and translated."""
        query: dict[str, Any] = {**params, "limit": 100}
        while True:
            page = _translating_errors(partial(self._page, listing, query, missing_param))
            if page is None:
                return
            yield from page.data
            if not page.has_more or not page.data:
                return
            query = {**params, "limit": 100, "starting_after": page.data[-1].id}

    def _page(self, listing: Callable[..., Any], query: dict[str, Any], missing_param: str | None) -> Any:
        self._before_call()
        try:
            return listing(query)
        except stripe.InvalidRequestError as error:
            # A deleted product has nothing; Stripe says so with a 404. (Customers: see list_active_entitlements.)
            if missing_param and _is_missing(error, missing_param):
                return None
            raise


def _is_missing(error: stripe.InvalidRequestError, *params: str) -> bool:
    return error.code == "resource_missing" and (error.param is None or error.param in params)


def _as_sent(item: Any) -> dict[str, Any]:
    """The object's JSON as Stripe sent it. stripe-python turns decimal strings (a price's
    `unit_amount_decimal`) into Decimal, which a JSON column cannot store: they become Stripe's strings again."""
    return dict(json.loads(json.dumps(item.to_dict(recursive=True), default=str)))


def _active_entitlement(item: Any) -> ActiveEntitlement:
    feature = item.feature if isinstance(item.feature, str) else item.feature.id
    return ActiveEntitlement(id=item.id, feature_id=feature, lookup_key=item.lookup_key)


def _feature(item: Any) -> CatalogFeature:
    name = item.name or item.lookup_key
    return CatalogFeature(item.id, item.lookup_key, name, bool(item.active), bool(item.livemode))


def _translating_errors(call: Callable[[], T]) -> T:
    try:
        return call()
    except StripeAccountUnreadable:
        raise
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
