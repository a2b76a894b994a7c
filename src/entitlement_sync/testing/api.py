"""The endpoints of Stripe's API that entitlement-sync calls, answered from a `BillingModel`.

Shapes follow Stripe's: list objects with `has_more` and `url`, cursor pagination with `starting_after`,
`limit` 1-100 (default 10), errors as `{"error": {"type", "message", "code", "param"}}`. Query strings use
Stripe's form encoding: `types[]=a` or `types[0]=a`, `created[gte]=...`, `expand[]=data.feature`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from . import shapes
from .model import BillingModel

Query = dict[str, list[str]]
Answer = tuple[int, dict[str, str], dict[str, Any]]
Route = Callable[[BillingModel, Query, dict[str, str]], Answer]


def route(method: str, path: str) -> tuple[Route, dict[str, str]] | None:
    """The handler for this request and the ids in its path, or None for a URL Stripe would not recognise."""
    if method != "GET":
        return None
    if path in _FIXED:
        return _FIXED[path], {}
    for pattern, handler in _WITH_IDS:
        match = pattern.match(path)
        if match:
            return handler, match.groupdict()
    return None


def unrecognised(method: str, path: str) -> Answer:
    return (
        404,
        {},
        shapes.error_body("invalid_request_error", f"Unrecognized request URL ({method}: {path})."),
    )


def list_active_entitlements(model: BillingModel, query: Query, _: dict[str, str]) -> Answer:
    customer = one(query, "customer")
    if not customer:
        return bad_param("customer", "Missing required param: customer.")
    with model.lock:
        unknown = not model.lenient_customers and customer not in model.customers
        if customer in model.deleted_customers or unknown:
            return missing("customer", f"No such customer: '{customer}'")
        items = model.active_entitlements(customer)
        if "data.feature" in many(query, "expand"):
            items = [{**item, "feature": model.features[item["feature"]].as_json()} for item in items]
    return paginated(query, "/v1/entitlements/active_entitlements", items)


def list_features(model: BillingModel, query: Query, _: dict[str, str]) -> Answer:
    """Every feature, archived ones included, newest first; `archived` and `lookup_key` filter."""
    archived, lookup_key = one(query, "archived"), one(query, "lookup_key")
    with model.lock:
        features = [feature.as_json() for feature in reversed(model.features.values())]
    if archived in ("true", "false"):
        features = [f for f in features if f["active"] == (archived == "false")]
    if lookup_key is not None:
        features = [f for f in features if f["lookup_key"] == lookup_key]
    return paginated(query, "/v1/entitlements/features", features)


def list_product_features(model: BillingModel, query: Query, path_ids: dict[str, str]) -> Answer:
    product_id = path_ids["id"]
    with model.lock:
        product = model.products.get(product_id)
        if product is None:
            return missing("id", f"No such product: '{product_id}'")
        items = [
            shapes.product_feature(product.attachment_ids[f], model.features[f].as_json()) for f in product.feature_ids
        ]
    return paginated(query, f"/v1/products/{product_id}/features", items)


def list_subscriptions(model: BillingModel, query: Query, _: dict[str, str]) -> Answer:
    """Newest first; without `status`, canceled ones are left out, as Stripe does; `status=all` keeps them."""
    status, customer = one(query, "status"), one(query, "customer")
    with model.lock:
        subscriptions = list(reversed(model.subscriptions.values()))
        wanted = [
            s.as_json()
            for s in subscriptions
            if (customer is None or s.customer_id == customer)
            and (status == "all" or (s.status == status if status else s.status != "canceled"))
        ]
    return paginated(query, "/v1/subscriptions", wanted)


def list_events(model: BillingModel, query: Query, _: dict[str, str]) -> Answer:
    """The last 30 days, newest first; filters `types[]` (`*` as a suffix), `created`, `delivery_success`."""
    types = many(query, "types") or many(query, "type")
    try:
        created = bounds(query, "created")
    except ValueError:
        return bad_param("created", "Invalid timestamp: must be an integer Unix timestamp.")
    delivery = one(query, "delivery_success")
    delivery_success = None if delivery is None else delivery == "true"
    events = model.events.search(types or None, created, delivery_success)
    return paginated(query, "/v1/events", events)


def retrieve_active_entitlement(model: BillingModel, query: Query, path_ids: dict[str, str]) -> Answer:
    entitlement_id = path_ids["id"]
    with model.lock:
        for customer_id in model.customers:
            for item in model.active_entitlements(customer_id):
                if item["id"] == entitlement_id:
                    return 200, {}, item
    return missing("id", f"No such active entitlement: '{entitlement_id}'")


def retrieve_feature(model: BillingModel, query: Query, path_ids: dict[str, str]) -> Answer:
    with model.lock:
        feature = model.features.get(path_ids["id"])
        if feature is None:
            return missing("id", f"No such feature: '{path_ids['id']}'")
        return 200, {}, feature.as_json()


def retrieve_subscription(model: BillingModel, query: Query, path_ids: dict[str, str]) -> Answer:
    with model.lock:
        subscription = model.subscriptions.get(path_ids["id"])
        if subscription is None:
            return missing("id", f"No such subscription: '{path_ids['id']}'")
        return 200, {}, subscription.as_json()


def retrieve_customer(model: BillingModel, query: Query, path_ids: dict[str, str]) -> Answer:
    """A deleted customer is answered `deleted: true`; one this account never had, 404."""
    customer_id = path_ids["id"]
    with model.lock:
        if customer_id in model.deleted_customers:
            return 200, {}, shapes.customer(customer_id, deleted=True)
        if customer_id in model.customers:
            return 200, {}, shapes.customer(customer_id)
    return missing("id", f"No such customer: '{customer_id}'")


def list_customers(model: BillingModel, query: Query, _: dict[str, str]) -> Answer:
    """Newest first (here: by id, descending); deleted customers are left out, as Stripe does."""
    with model.lock:
        customers = [shapes.customer(customer_id) for customer_id in sorted(model.customers, reverse=True)]
    return paginated(query, "/v1/customers", customers)


def retrieve_account(model: BillingModel, query: Query, _: dict[str, str]) -> Answer:
    return 200, {}, shapes.account(model.account_id)


def restricted_key_refused(model: BillingModel, api_key: str) -> Answer:
    """Stripe's 403 for `GET /v1/account` with a restricted key: no permission grants it."""
    message = (
        f"The provided key '{api_key[:8]}***' does not have the required permissions for this endpoint on account "
        f"'{model.account_id}'. This is a restricted API key, but the required permissions are not available "
        "for use by restricted keys."
    )
    return 403, {}, shapes.error_body("invalid_request_error", message)


_FIXED: dict[str, Route] = {
    "/v1/account": retrieve_account,
    "/v1/customers": list_customers,
    "/v1/entitlements/active_entitlements": list_active_entitlements,
    "/v1/entitlements/features": list_features,
    "/v1/subscriptions": list_subscriptions,
    "/v1/events": list_events,
}
_WITH_IDS: list[tuple[re.Pattern[str], Route]] = [
    (re.compile(r"^/v1/products/(?P<id>[^/]+)/features$"), list_product_features),
    (re.compile(r"^/v1/entitlements/active_entitlements/(?P<id>[^/]+)$"), retrieve_active_entitlement),
    (re.compile(r"^/v1/entitlements/features/(?P<id>[^/]+)$"), retrieve_feature),
    (re.compile(r"^/v1/subscriptions/(?P<id>[^/]+)$"), retrieve_subscription),
    (re.compile(r"^/v1/customers/(?P<id>[^/]+)$"), retrieve_customer),
]

# --- Stripe's query encoding, pagination and errors ------------------------------------------------------


def one(query: Query, name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def many(query: Query, name: str) -> list[str]:
    """Every value of an array parameter, whichever of Stripe's encodings was used: `a`, `a[]`, `a[0]`."""
    pattern = re.compile(rf"^{re.escape(name)}(\[\d*\])?$")
    return [value for key, values in query.items() if pattern.match(key) for value in values]


def bounds(query: Query, name: str) -> dict[str, int]:
    """A range filter: `created=5` or `created[gte]=5&created[lt]=9`. Raises ValueError on a non-integer."""
    found = {"eq": int(query[name][0])} if query.get(name) else {}
    for op in ("gt", "gte", "lt", "lte"):
        value = one(query, f"{name}[{op}]")
        if value is not None:
            found[op] = int(value)
    return found


def paginated(query: Query, url: str, items: list[dict[str, Any]]) -> Answer:
    raw = one(query, "limit") or "10"
    if not raw.lstrip("-").isdigit():
        return bad_param("limit", f"Invalid integer: {raw}")
    limit = int(raw)
    if not 1 <= limit <= 100:
        return bad_param("limit", "This value must be greater than or equal to 1 and less than or equal to 100.")
    ids = [item["id"] for item in items]
    starting_after, ending_before = one(query, "starting_after"), one(query, "ending_before")
    if ending_before:
        # An unknown cursor gives an empty page, where Stripe would answer an error.
        end = ids.index(ending_before) if ending_before in ids else 0
        page = items[max(0, end - limit) : end]
        return 200, {}, shapes.list_page(url, page, has_more=end - limit > 0)
    start = 0
    if starting_after:
        start = ids.index(starting_after) + 1 if starting_after in ids else len(items)
    page = items[start : start + limit]
    return 200, {}, shapes.list_page(url, page, has_more=start + limit < len(items))


def bad_param(param: str, message: str) -> Answer:
    return 400, {}, shapes.error_body("invalid_request_error", message, param=param)


def missing(param: str, message: str) -> Answer:
    return 404, {}, shapes.error_body("invalid_request_error", message, code="resource_missing", param=param)
