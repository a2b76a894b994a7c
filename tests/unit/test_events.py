import json
from datetime import UTC, datetime

import pytest

from entitlement_sync.errors import InvalidWebhook
from entitlement_sync.events import parse_event, subscription_snapshot
from entitlement_sync.testing.shapes import stripe_object


def fixture(name: str) -> dict:
    """Stripe's published object, as the simulator's package holds it (verbatim)."""
    return stripe_object(name.removesuffix(".json"))


def test_stripes_published_event_fixture_parses():
    event = parse_event(json.dumps(fixture("event.json")).encode())
    assert (event.id, event.type, event.created, event.livemode) == (
        "evt_1Pgc76B7WZ01zgkWwyRHS12y",
        "plan.created",
        1234567890,
        False,
    )
    assert event.customer_id is None


def test_summary_fixture_names_its_customer():
    payload = {
        "id": "evt_1",
        "object": "event",
        "type": "entitlements.active_entitlement_summary.updated",
        "created": 1,
        "livemode": True,
        "data": {"object": fixture("entitlements_active_entitlement_summary.json")},
    }
    assert parse_event(json.dumps(payload)).customer_id == "customer"


@pytest.mark.parametrize(
    "body, reason",
    [
        (b"not json", "body is not JSON"),
        (b"[1, 2]", "body is not a Stripe event"),
        (b'{"object": "customer", "id": "cus_1"}', "body is not a Stripe event"),
        (b'{"id": 5, "type": "x", "created": 1, "data": {"object": {}}}', "event has no valid id"),
        (b'{"id": "evt_1", "created": 1, "data": {"object": {}}}', "event has no valid type"),
        (
            b'{"id": "evt_1", "type": "x", "created": "soon", "data": {"object": {}}}',
            "event has no valid created",
        ),
        (b'{"id": "evt_1", "type": "x", "created": 1, "data": []}', "event has no data.object"),
    ],
)
def test_bodies_that_are_not_events_are_refused_with_a_reason(body, reason):
    with pytest.raises(InvalidWebhook, match=reason):
        parse_event(body)


def test_subscription_snapshot_takes_the_period_end_from_the_items():
    snapshot = subscription_snapshot(fixture("subscription.json"), "cus_QXg1o8vcGmoR32")
    assert snapshot.id == "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw"
    assert snapshot.status == "active"
    assert snapshot.cancel_at_period_end is True
    assert snapshot.current_period_end == datetime.fromtimestamp(976287773, UTC)
    assert snapshot.price_ids == ["price_1PgafmB7WZ01zgkW6dKueIc5"]
    assert snapshot.product_ids == ["prod_QXg1hqf4jFNsqG"]
