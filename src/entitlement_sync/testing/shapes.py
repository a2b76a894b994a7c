"""Stripe's JSON shapes, after the published fixtures (`../shared/stripe-fixtures/`), built from a few fields.

The HMAC is computed here by hand, exactly as Stripe does, so tests never verify our code with our code.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import time
from typing import Any

_ids = itertools.count(1)


def new_id(prefix: str) -> str:
    return f"{prefix}_{next(_ids):014d}"


def sign(body: str | bytes, secret: str, timestamp: int | None = None) -> str:
    """The `Stripe-Signature` header: `t=<unix>,v1=HMAC-SHA256(secret, f"{t}.{body}")`."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    raw = body if isinstance(body, bytes) else body.encode()
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + raw, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def sign_with_secrets(body: str | bytes, secrets: tuple[str, ...], timestamp: int | None = None) -> str:
    """One `t=` and a `v1=` per secret, as Stripe sends while a webhook secret is being rolled."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    signatures = [sign(body, secret, timestamp).split(",", 1)[1] for secret in secrets]
    return ",".join([f"t={timestamp}", *signatures])


def feature(feature_id: str, lookup_key: str, *, active: bool = True, livemode: bool = False) -> dict[str, Any]:
    return {
        "id": feature_id,
        "object": "entitlements.feature",
        "active": active,
        "livemode": livemode,
        "lookup_key": lookup_key,
        "metadata": {},
        "name": lookup_key.replace("_", " ").title(),
    }


def active_entitlement(
    feature_id: str, lookup_key: str, *, entitlement_id: str | None = None, livemode: bool = False
) -> dict[str, Any]:
    return {
        "id": entitlement_id or f"ent_{feature_id.removeprefix('feat_')}",
        "object": "entitlements.active_entitlement",
        "feature": feature_id,
        "livemode": livemode,
        "lookup_key": lookup_key,
    }


def product_feature(attachment_id: str, feature_json: dict[str, Any], *, livemode: bool = False) -> dict[str, Any]:
    """A `product_feature`: the attachment of a feature to a product, with the feature embedded."""
    return {
        "id": attachment_id,
        "object": "product_feature",
        "entitlement_feature": feature_json,
        "livemode": livemode,
    }


def customer(customer_id: str, *, created: int | None = None, livemode: bool = False) -> dict[str, Any]:
    """A `customer`, after Stripe's fixture (`customer.json`): the fields it has, mostly null or empty."""
    return {
        "id": customer_id,
        "object": "customer",
        "address": None,
        "balance": 0,
        "created": int(time.time()) if created is None else created,
        "currency": None,
        "default_source": None,
        "delinquent": False,
        "description": None,
        "discount": None,
        "email": None,
        "invoice_prefix": customer_id.removeprefix("cus_")[:7].upper(),
        "invoice_settings": {
            "custom_fields": None,
            "default_payment_method": None,
            "footer": None,
            "rendering_options": None,
        },
        "livemode": livemode,
        "metadata": {},
        "name": None,
        "next_invoice_sequence": 1,
        "phone": None,
        "preferred_locales": [],
        "shipping": None,
        "tax_exempt": "none",
        "test_clock": None,
    }


def deleted_customer(customer_id: str) -> dict[str, Any]:
    """What `GET /v1/customers/{id}` answers for a deleted customer: three fields, no 404."""
    return {"id": customer_id, "object": "customer", "deleted": True}


def account(account_id: str, name: str = "Simulated account") -> dict[str, Any]:
    """`GET /v1/account` (the fields a platform's own account shows; most are left out)."""
    return {
        "id": account_id,
        "object": "account",
        "business_profile": {"name": name, "url": None, "support_email": None},
        "charges_enabled": True,
        "country": "US",
        "default_currency": "usd",
        "details_submitted": True,
        "email": None,
        "payouts_enabled": True,
        "settings": {"dashboard": {"display_name": name, "timezone": "Etc/UTC"}},
        "type": "standard",
    }


def list_page(url: str, data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {"object": "list", "url": url, "has_more": has_more, "data": data}


def error_body(error_type: str, message: str, *, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"type": error_type, "message": message}
    if code:
        error["code"] = code
    if param:
        error["param"] = param
    return {"error": error}


def event(
    event_type: str,
    data_object: dict[str, Any],
    *,
    event_id: str | None = None,
    created: int | None = None,
    livemode: bool = False,
    previous_attributes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {"object": data_object}
    if previous_attributes is not None:
        data["previous_attributes"] = previous_attributes
    return {
        "id": event_id or new_id("evt"),
        "object": "event",
        "api_version": "2025-09-30.clover",
        "created": int(time.time()) if created is None else created,
        "data": data,
        "livemode": livemode,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }


def summary_event(
    customer_id: str, entitlements: list[dict[str, Any]], *, livemode: bool = False, **event_fields: Any
) -> dict[str, Any]:
    """`entitlements.active_entitlement_summary.updated`: at most 10 entitlements, `has_more` beyond."""
    summary = {
        "object": "entitlements.active_entitlement_summary",
        "customer": customer_id,
        "livemode": livemode,
        "entitlements": list_page(
            "/v1/entitlements/active_entitlements", entitlements[:10], has_more=len(entitlements) > 10
        ),
    }
    return event("entitlements.active_entitlement_summary.updated", summary, livemode=livemode, **event_fields)


def subscription(
    subscription_id: str,
    customer_id: str,
    *,
    status: str = "active",
    prices: list[tuple[str, str]] = (),  # type: ignore[assignment]
    current_period_end: int | None = None,
    cancel_at_period_end: bool = False,
    livemode: bool = False,
) -> dict[str, Any]:
    """A subscription object; `prices` is a list of (price id, product id). The period lives on each item."""
    period_end = current_period_end or int(time.time()) + 30 * 86400
    items = [
        {
            "id": f"si_{subscription_id.removeprefix('sub_')}_{index}",
            "object": "subscription_item",
            "current_period_end": period_end,
            "current_period_start": period_end - 30 * 86400,
            "price": {"id": price_id, "object": "price", "product": product_id, "type": "recurring"},
            "quantity": 1,
            "subscription": subscription_id,
        }
        for index, (price_id, product_id) in enumerate(prices)
    ]
    return {
        "id": subscription_id,
        "object": "subscription",
        "customer": customer_id,
        "status": status,
        "cancel_at_period_end": cancel_at_period_end,
        "items": {
            "object": "list",
            "data": items,
            "has_more": False,
            "url": f"/v1/subscription_items?subscription={subscription_id}",
        },
        "livemode": livemode,
        "metadata": {},
    }
