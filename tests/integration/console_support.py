"""What the console's tests share: a token, a logged-in Flask test client, and a customer's story in Stripe."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from entitlement_sync.bootstrap import Container
from entitlement_sync.events import event_from_payload
from entitlement_sync.testing import FakeStripe

CONSOLE_TOKEN = "console-token-for-tests"
CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(page: str) -> str:
    found = CSRF_FIELD.search(page)
    assert found, "the page has no CSRF field"
    return found.group(1)


def log_in(client: Any, token: str = CONSOLE_TOKEN) -> Any:
    """Log the test client in through the form, as a browser would; returns the answer to the POST."""
    csrf = csrf_of(client.get("/console/login").get_data(as_text=True))
    return client.post("/console/login", data={"token": token, "csrf": csrf})


def post_form(client: Any, path: str, page_path: str, **fields: str) -> Any:
    """POST a console form with the CSRF token of the page it sits on."""
    csrf = csrf_of(client.get(page_path).get_data(as_text=True))
    return client.post(path, data={"csrf": csrf, **fields})


@dataclass(frozen=True)
class Story:
    customer: str
    subscription: str
    product: str
    event_ids: list[str]


def subscribe_with_catalog(container: Container, fake_stripe: FakeStripe, customer: str = "cus_alice") -> Story:
    """A customer subscribes to a plan carrying api_access and reports; the inbox stores Stripe's events and the
    local catalog knows which product grants what (so the console can say which subscription a feature comes
    from). Events are stored, not processed: the caller runs a worker or the syncer."""
    api = fake_stripe.create_feature("api_access", "API access", feature_id="feat_api")
    reports = fake_stripe.create_feature("reports", "Reports", feature_id="feat_reports")
    product = fake_stripe.create_product([api, reports], product_id="prod_pro")
    subscription = fake_stripe.subscribe(customer, [product])
    container.catalog.sync([product])
    event_ids = []
    for payload in fake_stripe.events.all():
        container.receiver.accept_event(event_from_payload(payload))
        event_ids.append(payload["id"])
    return Story(customer, subscription, product, event_ids)


def fail_an_event(
    container: Container, fake_stripe: FakeStripe, event_id: str = "evt_1", customer: str = "cus_1"
) -> str:
    """Store a summary event that fails for good (Stripe answers 401 to its sync); a worker must be running."""
    from entitlement_sync.testing import active_entitlement
    from tests.conftest import settle
    from tests.fakes import summary_signal

    fake_stripe.fail_next(401)
    payload = summary_signal(customer, [active_entitlement("feat_api", "api_access")], event_id=event_id)
    container.receiver.accept_event(event_from_payload(payload))
    settle(container)
    return event_id
