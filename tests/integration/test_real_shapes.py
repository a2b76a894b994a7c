"""Events in Stripe's real shape (decimal strings, a float, nulls, expanded and unexpanded references) flow
through the service as they come: webhook, worker, access table and subscriptions mirror."""

from entitlement_sync.models import EventStatus, Subscription
from tests.conftest import post_webhook, settle, stored_event


def test_a_real_shaped_subscription_event_reaches_the_mirror_and_the_access_table(
    client, container, worker, fake_stripe
):
    feature = fake_stripe.create_feature("api_access")
    product = fake_stripe.create_product([feature])
    subscription_id = fake_stripe.subscribe("cus_1", [product], with_coupon=True)
    [created] = fake_stripe.events.of_type("customer.subscription.created")
    item = created["data"]["object"]["items"]["data"][0]
    assert item["price"]["unit_amount_decimal"] == "2000"
    assert created["data"]["object"]["discounts"][0]["source"]["coupon"]["percent_off"] == 25.5

    assert post_webhook(client, created).status_code == 200
    settle(container)

    stored = stored_event(container, created["id"])
    assert stored is not None and stored.status == EventStatus.PROCESSED, stored and stored.last_error
    assert stored.payload == created  # kept as Stripe sent it: strings stay strings, the float a float
    with container.new_session() as session:
        mirror = session.get(Subscription, subscription_id)
        assert (mirror.customer_id, mirror.status, mirror.price_ids, mirror.product_ids) == (
            "cus_1",
            "active",
            [item["price"]["id"]],
            [product],
        )
        assert mirror.current_period_end.timestamp() == item["current_period_end"]
    assert container.reader.has_access("cus_1", "api_access")
