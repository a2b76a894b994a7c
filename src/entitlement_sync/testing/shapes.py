"""Stripe's JSON, built from Stripe's own published objects (`fixtures/*.json`, verbatim copies of
`../shared/stripe-fixtures/`), with only the ids and the fields the simulated account controls replaced.

So everything the simulator emits carries what a real account sends besides: decimal strings
(`unit_amount_decimal`), a float (`percent_off: 25.5`), `null`s, expanded and unexpanded references.
The HMAC is computed here by hand, exactly as Stripe does, so tests never verify our code with our code.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import itertools
import json
import time
from collections.abc import Sequence
from importlib import resources
from typing import Any

_ids = itertools.count(1)
PERIOD_SECONDS = 30 * 86400


def new_id(prefix: str) -> str:
    return f"{prefix}_{next(_ids):014d}"


@functools.cache
def _fixture_text(fixture: str) -> str:
    return (resources.files(__package__) / "fixtures" / f"{fixture}.json").read_text(encoding="utf-8")


def stripe_object(fixture: str, /, **fields: Any) -> dict[str, Any]:
    """A fresh copy of Stripe's published object `fixtures/<fixture>.json`, these top-level fields replaced."""
    return {**json.loads(_fixture_text(fixture)), **fields}


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


# --- Entitlements ----------------------------------------------------------------------------------------


def feature(
    feature_id: str, lookup_key: str, *, active: bool = True, livemode: bool = False, name: str | None = None
) -> dict[str, Any]:
    name = name or lookup_key.replace("_", " ").title()
    return stripe_object(
        "entitlements_feature", id=feature_id, lookup_key=lookup_key, name=name, active=active, livemode=livemode
    )


def active_entitlement(
    feature_id: str, lookup_key: str, *, entitlement_id: str | None = None, livemode: bool = False
) -> dict[str, Any]:
    """`feature` is the feature's id (unexpanded), as `GET /v1/entitlements/active_entitlements` lists it."""
    entitlement_id = entitlement_id or f"ent_{feature_id.removeprefix('feat_')}"
    return stripe_object(
        "entitlements_active_entitlement",
        id=entitlement_id,
        feature=feature_id,
        lookup_key=lookup_key,
        livemode=livemode,
    )


def product_feature(attachment_id: str, feature_json: dict[str, Any], *, livemode: bool = False) -> dict[str, Any]:
    """A `product_feature`: the attachment of a feature to a product, with the feature embedded."""
    return stripe_object("product_feature", id=attachment_id, entitlement_feature=feature_json, livemode=livemode)


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
    return stripe_object("list_active_entitlements.stripe_mock_response", url=url, data=data, has_more=has_more)


def error_body(error_type: str, message: str, *, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"type": error_type, "message": message}
    if code:
        error["code"] = code
    if param:
        error["param"] = param
    return {"error": error}


# --- Events ----------------------------------------------------------------------------------------------


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
    return stripe_object(
        "event",
        id=event_id or new_id("evt"),
        type=event_type,
        api_version="2025-09-30.clover",  # the endpoint's version; the fixture's is null
        created=int(time.time()) if created is None else created,
        data=data,
        livemode=livemode,
        pending_webhooks=1,
    )


def summary_event(
    customer_id: str,
    entitlements: list[dict[str, Any]],
    *,
    livemode: bool = False,
    features: dict[str, dict[str, Any]] | None = None,
    **event_fields: Any,
) -> dict[str, Any]:
    """`entitlements.active_entitlement_summary.updated`: at most 10 entitlements, `has_more` beyond.

    With `features` (feature id -> feature JSON), each entitlement's `feature` is expanded, as in Stripe's fixture.
    """
    shown = [
        {**item, "feature": features[item["feature"]]} if features and item["feature"] in features else item
        for item in entitlements[:10]
    ]
    summary = stripe_object(
        "entitlements_active_entitlement_summary",
        customer=customer_id,
        livemode=livemode,
        entitlements=list_page("/v1/entitlements/active_entitlements", shown, has_more=len(entitlements) > 10),
    )
    return event("entitlements.active_entitlement_summary.updated", summary, livemode=livemode, **event_fields)


# --- Billing ---------------------------------------------------------------------------------------------


def customer(customer_id: str, *, deleted: bool = False, livemode: bool = False) -> dict[str, Any]:
    """A customer; a deleted one is what Stripe answers for it: `{id, object, deleted: true}`."""
    if deleted:
        return {"id": customer_id, "object": "customer", "deleted": True}
    return stripe_object("customer", id=customer_id, livemode=livemode, discount=None)


def discount(discount_id: str, customer_id: str, subscription_id: str, *, start: int) -> dict[str, Any]:
    """A discount whose coupon (expanded) is Stripe's sample: `percent_off: 25.5`, a float."""
    source = {"type": "coupon", "coupon": stripe_object("coupon")}
    return stripe_object(
        "discount",
        id=discount_id,
        customer=customer_id,
        subscription=subscription_id,
        start=start,
        end=None,
        source=source,
    )


def subscription_item(
    item_id: str, subscription_id: str, price_id: str, product_id: str, *, period_start: int, livemode: bool = False
) -> dict[str, Any]:
    """An item with its price and plan expanded (decimal strings in both); the product stays an id."""
    price = stripe_object("price", id=price_id, product=product_id, livemode=livemode)
    plan = stripe_object("plan", id=price_id, product=product_id, livemode=livemode)
    return stripe_object(
        "subscription_item",
        id=item_id,
        subscription=subscription_id,
        created=period_start,
        current_period_start=period_start,
        current_period_end=period_start + PERIOD_SECONDS,
        price=price,
        plan=plan,
    )


def subscription(
    subscription_id: str,
    customer_id: str,
    *,
    status: str = "active",
    prices: Sequence[tuple[str, str]] = (),
    current_period_end: int | None = None,
    cancel_at_period_end: bool = False,
    livemode: bool = False,
    created: int | None = None,
    trial_end: int | None = None,
    canceled_at: int | None = None,
    discounts: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """A subscription; `prices` is a list of (price id, product id). The period lives on each item."""
    period_start = (current_period_end or int(time.time()) + PERIOD_SECONDS) - PERIOD_SECONDS
    created = period_start if created is None else created
    items = [
        subscription_item(
            f"si_{subscription_id.removeprefix('sub_')}_{index}",
            subscription_id,
            price,
            product,
            period_start=period_start,
            livemode=livemode,
        )
        for index, (price, product) in enumerate(prices)
    ]
    item_list = list_page(f"/v1/subscription_items?subscription={subscription_id}", items, has_more=False)
    return stripe_object(
        "subscription",
        id=subscription_id,
        customer=customer_id,
        status=status,
        items=item_list,
        livemode=livemode,
        created=created,
        start_date=created,
        billing_cycle_anchor=period_start,
        cancel_at_period_end=cancel_at_period_end,
        cancel_at=None,
        canceled_at=canceled_at,
        ended_at=canceled_at,
        trial_start=None if trial_end is None else created,
        trial_end=trial_end,
        discounts=list(discounts),
        # What this account never sets: no pending update, collection paused, schedule or Connect transfer.
        pending_update=None,
        pause_collection=None,
        transfer_data=None,
        next_pending_invoice_item_invoice=None,
    )
