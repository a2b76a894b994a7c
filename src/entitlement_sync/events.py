"""What a Stripe event means to us: which types we handle, whose customer it concerns, what a subscription says."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .errors import InvalidWebhook
from .ports import ActiveEntitlement

SUMMARY_UPDATED = "entitlements.active_entitlement_summary.updated"
SUBSCRIPTION_TYPES = frozenset(
    f"customer.subscription.{suffix}"
    for suffix in (
        "created",
        "updated",
        "deleted",
        "paused",
        "resumed",
        "trial_will_end",
        "pending_update_applied",
        "pending_update_expired",
    )
)
HANDLED_TYPES = SUBSCRIPTION_TYPES | {SUMMARY_UPDATED}


@dataclass(frozen=True)
class InboundEvent:
    id: str
    type: str
    created: int
    livemode: bool
    customer_id: str | None
    payload: dict[str, Any]
    account: str | None = None  # a connected account's id (`acct_...`): the objects live in that account
    # The verified body the payload was parsed from, kept as Stripe sent it: stored as is, never serialized again.
    body: str | None = field(default=None, compare=False, repr=False)

    @property
    def data_object(self) -> dict[str, Any]:
        data_object: dict[str, Any] = self.payload["data"]["object"]  # checked by event_from_payload
        return data_object


def envelope_only(event: InboundEvent) -> InboundEvent:
    """The event without its payload: what is kept of an event we ignore (its type, mode or account is not
    ours). Such payloads carry other people's data (a PaymentIntent's client_secret, addresses) that we have
    no reason to hold."""
    envelope = {"id": event.id, "object": "event", "type": event.type, "created": event.created}
    envelope |= {"livemode": event.livemode, "account": event.payload.get("account"), "envelope_only": True}
    return InboundEvent(event.id, event.type, event.created, event.livemode, None, envelope)


# Stripe's events nest about ten levels deep; anything far deeper is not from Stripe, and would only cost
# recursion (Python's parser, the database's) to store.
MAX_DEPTH = 64
# `created` must fit a BIGINT and a datetime (year 9999), or storing and showing it fails.
MAX_CREATED = 253_402_300_799
_IDENTIFIER = re.compile(r"[\x21-\x7e]{1,255}")  # Stripe's ids and types: printable ASCII, no NUL or spaces


def parse_event(body: bytes | str) -> InboundEvent:
    """The event in a verified body; InvalidWebhook when the body is not a Stripe event or holds what the
    database cannot store (NaN, infinities, absurd depth): a 400, never a 500."""
    try:
        text = body.decode() if isinstance(body, bytes) else body
        payload = _DECODER.decode(text)
    except RecursionError as error:
        raise InvalidWebhook("body is nested too deeply") from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InvalidWebhook("body is not JSON") from error
    except ValueError as error:  # NaN, an infinity, an int of more than 4,300 digits
        raise InvalidWebhook(f"body holds a value out of range: {str(error)[:60]}") from error
    # A body with no more brackets than the limit cannot nest deeper (brackets in strings only add to the count):
    # most webhooks skip the walk.
    if text.count("{") + text.count("[") > MAX_DEPTH and _depth_exceeds(payload, MAX_DEPTH):
        raise InvalidWebhook(f"body is nested more than {MAX_DEPTH} levels deep")
    # Stripe sends UTF-8, which cannot hold half a surrogate pair; JSON's escapes can. PostgreSQL stores such a
    # body as `json` text but refuses it wherever it reads inside it (the worker's claim does), so it never would
    # be processed: refused here, with the reason. Only a body with such an escape is looked at closely.
    if _SURROGATE_ESCAPE.search(text) and _holds_lone_surrogate(payload):
        raise InvalidWebhook("body holds a lone surrogate escape (\\ud800-\\udfff): not Unicode text")
    return event_from_payload(payload, body=text)


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _holds_lone_surrogate(payload: Any) -> bool:
    """True when a string of the parsed body holds half a pair (a whole pair parses as one character)."""
    try:
        json.dumps(payload, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"number {text[:20]} is out of range")
    return number


_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float)  # built once, not per body


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Iteratively, so that the check itself cannot overflow the stack; only containers are visited (most of a
    payload's values are scalars, and this runs for every webhook)."""
    if not isinstance(value, dict | list):
        return False
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        pending.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def event_from_payload(payload: Any, body: str | None = None) -> InboundEvent:
    """`body`: the text `payload` was parsed from, if the caller has it (stored as is)."""
    if not isinstance(payload, dict) or payload.get("object", "event") != "event":
        raise InvalidWebhook("body is not a Stripe event")
    event_id, event_type, created = payload.get("id"), payload.get("type"), payload.get("created")
    data = payload.get("data")
    if not (isinstance(event_id, str) and _IDENTIFIER.fullmatch(event_id)):
        raise InvalidWebhook("event has no valid id")
    if not (isinstance(event_type, str) and len(event_type) <= 100 and _IDENTIFIER.fullmatch(event_type)):
        raise InvalidWebhook("event has no valid type")
    if not isinstance(created, int) or isinstance(created, bool) or not 0 <= created <= MAX_CREATED:
        raise InvalidWebhook("event has no valid created timestamp")
    if not (isinstance(data, dict) and isinstance(data.get("object"), dict)):
        raise InvalidWebhook("event has no data.object")
    return InboundEvent(
        id=event_id,
        type=event_type,
        created=created,
        livemode=bool(payload.get("livemode", False)),
        customer_id=_customer_of(data["object"]),
        payload=payload,
        account=payload["account"] if isinstance(payload.get("account"), str) and payload["account"] else None,
        body=body,
    )


def connect_reason(account: Any) -> str | None:
    """Why an event of a connected account is not applied; None for the platform's own events.

    Its customer lives in the connected account: applying it would grant or revoke a platform customer's
    access from another account's objects (or call Stripe without the `Stripe-Account` header it needs).
    """
    if not account:
        return None
    return f"event of connected account {account}: Stripe Connect is not supported (one account per deployment)"


def _customer_of(data_object: dict[str, Any]) -> str | None:
    customer = data_object.get("customer")
    if isinstance(customer, dict):
        customer = customer.get("id")
    return customer if isinstance(customer, str) and _IDENTIFIER.fullmatch(customer) else None


@dataclass(frozen=True)
class SubscriptionSnapshot:
    id: str
    customer_id: str
    status: str
    cancel_at_period_end: bool
    current_period_end: datetime | None
    price_ids: list[str]
    product_ids: list[str]


def subscription_snapshot(data_object: dict[str, Any], customer_id: str) -> SubscriptionSnapshot:
    items = (data_object.get("items") or {}).get("data") or []
    prices = [item.get("price") or {} for item in items]
    # Current API versions keep the period on each item; older ones on the subscription itself.
    period_ends = [item["current_period_end"] for item in items if item.get("current_period_end")]
    period_end = max(period_ends) if period_ends else data_object.get("current_period_end")
    return SubscriptionSnapshot(
        id=data_object["id"],
        customer_id=customer_id,
        status=str(data_object.get("status") or "unknown"),
        cancel_at_period_end=bool(data_object.get("cancel_at_period_end")),
        current_period_end=datetime.fromtimestamp(period_end, UTC) if period_end else None,
        price_ids=[price["id"] for price in prices if price.get("id")],
        product_ids=[_id_of(price.get("product")) for price in prices if price.get("product")],
    )


def _id_of(value: Any) -> str:
    return value["id"] if isinstance(value, dict) else str(value)


def complete_entitlements(event_type: str, payload: Any) -> list[ActiveEntitlement] | None:
    """The customer's whole set of active entitlements, when the event carries it: a summary event whose list
    says `has_more: false`. None when it does not (another type, more than the payload holds, an odd shape):
    then only a fetch can tell. The payload is Stripe's, signed: its set is Stripe's state as of `created`."""
    if event_type != SUMMARY_UPDATED or not isinstance(payload, dict):
        return None
    listing = ((payload.get("data") or {}).get("object") or {}).get("entitlements")
    if not isinstance(listing, dict) or listing.get("has_more") is not False:
        return None
    items = listing.get("data")
    if not isinstance(items, list):
        return None
    found = [_entitlement_in(item) for item in items]
    return None if None in found else [item for item in found if item is not None]


def _entitlement_in(item: Any) -> ActiveEntitlement | None:
    if not isinstance(item, dict):
        return None
    feature = item.get("feature")
    feature_id = feature.get("id") if isinstance(feature, dict) else feature
    entitlement_id, lookup_key = item.get("id"), item.get("lookup_key")
    if not (isinstance(feature_id, str) and isinstance(entitlement_id, str) and isinstance(lookup_key, str)):
        return None
    if not (feature_id and entitlement_id and lookup_key):
        return None
    return ActiveEntitlement(id=entitlement_id, feature_id=feature_id, lookup_key=lookup_key)
