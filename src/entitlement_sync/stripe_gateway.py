"""The home of `stripe` (with `stripe_http`, its HTTP client, and `stripe_signature`, the webhook verifier): it
speaks our vocabulary and turns Stripe's errors into ours."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from email.utils import parsedate_to_datetime
from functools import lru_cache, partial
from typing import Any, TypeVar

import stripe

from .errors import CustomerNotFound, StripeAccountUnreadable, StripeRejected, StripeUnavailable
from .ordering import Stamp, Window
from .ports import (
    ActiveEntitlement,
    CatalogFeature,
    CustomerState,
    EntitlementsRead,
    EventPage,
    NoTelemetry,
    ProductFeatureLink,
    StripeAccount,
    Telemetry,
)
from .stripe_http import PacedHttpClient, configure_stripe_python, proxies_for

T = TypeVar("T")


class StripeGateway:
    """Reads from Stripe's API. Retries nothing itself: the job queue (or the ops use case) owns retries.

    `before_call` (a rate pacer) runs before every HTTP request, at the last moment: see `PacedHttpClient`.
    Every request is told to `telemetry` with a short endpoint name, its status, and the pacer's wait.
    """

    def __init__(
        self,
        api_key: str,
        api_base: str,
        timeout_seconds: float,
        before_call: Callable[[], None] | None = None,
        telemetry: Telemetry | None = None,
        client_telemetry: bool = False,
    ) -> None:
        configure_stripe_python(client_telemetry=client_telemetry)  # see there: process-wide
        self._http = PacedHttpClient(timeout_seconds, before_call, proxies_for(api_base))
        self._client = stripe.StripeClient(
            api_key or "sk_test_missing",
            base_addresses={"api": api_base},
            http_client=self._http,
            max_network_retries=0,
        )
        self._terms = (api_key, api_base, timeout_seconds)
        self._client_telemetry = client_telemetry
        self._paced = before_call is not None
        self._telemetry = telemetry or NoTelemetry()

    def paced(self, before_call: Callable[[], None]) -> StripeGateway:
        """The same gateway, calling `before_call` (a rate pacer) before each request."""
        return StripeGateway(
            *self._terms, before_call=before_call, telemetry=self._telemetry, client_telemetry=self._client_telemetry
        )

    def list_active_entitlements(self, customer_id: str) -> list[ActiveEntitlement]:
        """Every active entitlement of the customer (see `read_active_entitlements`)."""
        return self.read_active_entitlements(customer_id).entitlements

    def read_active_entitlements(self, customer_id: str) -> EntitlementsRead:
        """Every active entitlement of the customer, with Stripe's clock of the read: each page's `Date` and
        the round trip around it (the first page's bounds the read from below, the last page's from above).

        Raises CustomerNotFound on a 404 for the customer: Stripe answers so for a deleted customer and
        equally for a key of another account or mode, so the caller must ask which (`customer_state`).
        """
        query: dict[str, Any] = {"customer": customer_id, "limit": 100}
        items: list[dict[str, Any]] = []
        stamps: list[Stamp | None] = []
        while True:
            try:
                page, rtt = _translating_errors(
                    partial(self._timed_page, self._list_raw, query, "active_entitlements", None)
                )
            except StripeRejected as error:
                cause = error.__cause__
                if isinstance(cause, stripe.InvalidRequestError) and _missing(cause, "customer"):
                    raise CustomerNotFound(str(error)) from cause
                raise
            stamps.append(_stamp(page, rtt))
            body = page.data
            data = body["data"]
            items.extend(data)
            if not body.get("has_more") or not data:
                break
            query = {"customer": customer_id, "limit": 100, "starting_after": data[-1]["id"]}
        window = Window.of_read(stamps[0], stamps[-1])
        return EntitlementsRead([_entitlement_from_json(item) for item in items], window)

    def _list_raw(self, query: dict[str, Any]) -> Any:
        """The worker's one call per event, as the response's JSON (a `StripeResponse`): stripe-python's auth,
        headers, HTTP client and error classes, without building a StripeObject of every item and page, which was
        a fifth of a fetch's CPU."""
        return self._client.raw_request("get", "/v1/entitlements/active_entitlements", **query)

    def customer_state(self, customer_id: str) -> CustomerState:
        """`GET /v1/customers/{id}`: a deleted customer is still answered (`deleted: true`); a 404 is unknown."""

        def retrieve(_: Any) -> Any:
            return self._client.v1.customers.retrieve(customer_id)

        customer = _translating_errors(partial(self._page, retrieve, {}, "customers", "id"))
        if customer is None:
            return CustomerState.UNKNOWN
        return CustomerState.DELETED if getattr(customer, "deleted", False) else CustomerState.EXISTS

    def retrieve_account(self) -> StripeAccount:
        """`GET /v1/account`: whose key this is. Restricted keys may never ask: StripeAccountUnreadable."""

        def retrieve(_: Any) -> Any:
            return self._client.v1.accounts.retrieve_current()

        try:
            account = _translating_errors(partial(self._page, retrieve, {}, "account", None))
        except StripeRejected as error:
            if isinstance(error.__cause__, stripe.PermissionError):
                raise StripeAccountUnreadable(str(error)) from error.__cause__
            raise
        settings = getattr(account, "settings", None)
        dashboard = getattr(settings, "dashboard", None) if settings else None
        profile = getattr(account, "business_profile", None)
        name = getattr(dashboard, "display_name", None) or (getattr(profile, "name", None) if profile else None)
        return StripeAccount(id=account.id, name=name)

    def list_one_customer(self) -> str | None:
        """The id of the newest customer of the account, or None: a cheap proof that the key reads customers."""
        listing = self._client.v1.customers.list
        page = _translating_errors(partial(self._page, listing, {"limit": 1}, "customers", None))
        return page.data[0].id if page is not None and page.data else None

    def list_events_page(
        self, types: list[str], created_gte: int, undelivered: bool, starting_after: str | None = None
    ) -> EventPage:
        """One page (100) of the Events API (the last 30 days only), newest first: one paced request.

        Each event is the JSON of Stripe's response body, exactly as the API returned it. Not the SDK's object:
        stripe-python turns decimal strings (`unit_amount_decimal`, ...) into `Decimal`, which `to_dict()`
        keeps and JSON cannot store; and a webhook delivers that same JSON, so both paths store one shape.
        """
        params: dict[str, Any] = {"types": sorted(types), "created": {"gte": created_gte}, "limit": 100}
        if undelivered:
            params["delivery_success"] = False
        if starting_after:
            params["starting_after"] = starting_after
        page = _translating_errors(partial(self._page, self._client.v1.events.list, params, "events", None))
        body = json.loads(page.last_response.body)
        return EventPage(events=list(body["data"]), has_more=bool(body.get("has_more")))

    def list_subscription_customers(self) -> Iterator[str]:
        """The customer of every subscription, in any status (a canceled one may still hold a grant here)."""
        for item in self._each(self._client.v1.subscriptions.list, {"status": "all"}, "subscriptions"):
            yield item.customer if isinstance(item.customer, str) else item.customer.id

    def list_features(self) -> list[CatalogFeature]:
        """The whole catalog: active and archived features (archived ones still grant access)."""
        listing = self._client.v1.entitlements.features.list
        pages = (self._each(listing, {"archived": archived}, "features") for archived in (False, True))
        return [_feature(item) for page in pages for item in page]

    def list_product_features(self, product_id: str) -> list[ProductFeatureLink]:
        """The features attached to a product; none for a product Stripe no longer has."""

        def listing(params: Any) -> Any:
            return self._client.v1.products.features.list(product_id, params)

        items = self._each(listing, {}, "product_features", missing_param="id")
        return [ProductFeatureLink(item.id, product_id, _feature(item.entitlement_feature)) for item in items]

    def _each(
        self,
        listing: Callable[..., Any],
        params: dict[str, Any],
        endpoint: str,
        *,
        missing_param: str | None = None,
    ) -> Iterator[Any]:
        """Every item of a paginated list, one page per request, so each request is paced and translated."""
        query: dict[str, Any] = {**params, "limit": 100}
        while True:
            page = _translating_errors(partial(self._page, listing, query, endpoint, missing_param))
            if page is None:
                return
            yield from page.data
            if not page.has_more or not page.data:
                return
            query = {**params, "limit": 100, "starting_after": page.data[-1].id}

    def _page(
        self, listing: Callable[..., Any], query: dict[str, Any], endpoint: str, missing_param: str | None
    ) -> Any:
        return self._timed_page(listing, query, endpoint, missing_param)[0]

    def _timed_page(
        self, listing: Callable[..., Any], query: dict[str, Any], endpoint: str, missing_param: str | None
    ) -> tuple[Any, float]:
        """The page and the round trip of its request alone (the pacer's wait left out)."""
        started = time.perf_counter()
        try:
            page = listing(query)
        except stripe.StripeError as error:
            status = str(error.http_status) if error.http_status else "error"
            reason = _header(error.headers, "Stripe-Rate-Limited-Reason")
            self._telemetry.stripe_called(endpoint, status, self._seconds_since(started), reason)
            # A deleted product has nothing; Stripe says so with a 404. (Customers: see read_active_entitlements.)
            if isinstance(error, stripe.InvalidRequestError) and _missing(error, missing_param):
                return None, 0.0
            raise
        rtt = self._seconds_since(started)
        self._telemetry.stripe_called(endpoint, "200", rtt, None)
        return page, rtt

    def _seconds_since(self, started: float) -> float:
        """Seconds since `started`, less the pacer's wait within them (told to telemetry on its own)."""
        waited = self._http.take_wait()
        if self._paced:
            self._telemetry.pacer_waited(waited)
        return time.perf_counter() - started - waited


def _missing(error: stripe.InvalidRequestError, param: str | None) -> bool:
    return bool(param) and error.code == "resource_missing" and error.param in (None, param)


def _stamp(page: Any, rtt: float) -> Stamp | None:
    """The response's `Date` (HTTP date, second resolution) as unix seconds, with the round trip around it;
    None when Stripe (or a proxy) sent no Date or one we cannot read: the read is then of unknown date."""
    response = page if isinstance(page, stripe.StripeResponse) else getattr(page, "last_response", None)
    value = _header(getattr(response, "headers", None), "Date")
    seconds = _unix_seconds(value) if value else None
    return None if seconds is None else Stamp(seconds, rtt)


@lru_cache(maxsize=64)
def _unix_seconds(http_date: str) -> int | None:
    # Kept: every response of one second carries the same Date, and the email parser is the slow part.
    try:
        return int(parsedate_to_datetime(http_date).timestamp())
    except (TypeError, ValueError, IndexError):
        return None


def _header(headers: Any, name: str) -> str | None:
    if not headers:
        return None
    found = headers.get(name)  # requests' headers match any case at once; a plain dict may need the scan
    if found is not None:
        return str(found)
    for key, value in dict(headers).items():
        if key.lower() == name.lower():
            return str(value)
    return None


def _entitlement_from_json(item: dict[str, Any]) -> ActiveEntitlement:
    feature = item["feature"]
    feature_id = feature if isinstance(feature, str) else feature["id"]
    return ActiveEntitlement(id=item["id"], feature_id=feature_id, lookup_key=item["lookup_key"])


def _feature(item: Any) -> CatalogFeature:
    name = item.name or item.lookup_key
    return CatalogFeature(item.id, item.lookup_key, name, bool(item.active), bool(item.livemode))


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
