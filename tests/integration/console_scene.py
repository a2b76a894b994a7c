"""A busy hour for the console's screenshots: a catalog, customers subscribing and changing plans, one event
that failed, and every timestamp spread over the last hour so that the overview's chart has a shape."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from entitlement_sync.bootstrap import Container
from entitlement_sync.events import event_from_payload
from entitlement_sync.models import (
    AccessChange,
    CustomerSyncState,
    Entitlement,
    EventAttempt,
    StripeEvent,
    utcnow,
)
from entitlement_sync.testing import FakeStripe
from tests.conftest import settle
from tests.integration.browser import full_page_screenshot, keep_screenshot
from tests.integration.console_support import fail_an_event


@dataclass(frozen=True)
class Scene:
    customer: str
    failed_event: str


def stage_a_busy_hour(container: Container, fake_stripe: FakeStripe, customers: int = 40) -> Scene:
    api = fake_stripe.create_feature("api_access", "API access", feature_id="feat_api")
    reports = fake_stripe.create_feature("reports", "Reports", feature_id="feat_reports")
    sso = fake_stripe.create_feature("sso", "Single sign-on", feature_id="feat_sso")
    starter = fake_stripe.create_product([api], product_id="prod_starter")
    pro = fake_stripe.create_product([api, reports], product_id="prod_pro")
    enterprise = fake_stripe.create_product([api, reports, sso], product_id="prod_enterprise")
    plans = [starter, pro, enterprise]
    picks = random.Random(7)
    for n in range(customers):
        subscription = fake_stripe.subscribe(f"cus_{n:04d}", [picks.choice(plans)])
        if n % 3 == 0:
            fake_stripe.change_products(subscription, [picks.choice(plans)])
        if n % 11 == 5:
            fake_stripe.cancel(subscription)
    deliver(container, fake_stripe)
    # Alice's story, each step processed before the next, so that her history shows every grant and revoke.
    alice = fake_stripe.subscribe("cus_alice", [starter])
    deliver(container, fake_stripe)
    fake_stripe.change_products(alice, [enterprise])
    deliver(container, fake_stripe)
    fake_stripe.change_products(alice, [pro])
    deliver(container, fake_stripe)
    container.catalog.sync()
    failed = fail_an_event(container, fake_stripe, "evt_1QxFailedSync0001", "cus_alice")
    spread_over_the_last_hour(container, picks)
    return Scene("cus_alice", failed)


def deliver(container: Container, fake_stripe: FakeStripe) -> None:
    """Store (and let the worker process) every event Stripe recorded that the inbox does not hold yet."""
    for payload in fake_stripe.events.all():
        container.receiver.accept_event(event_from_payload(payload))  # a duplicate is a no-op
    settle(container)


def spread_over_the_last_hour(container: Container, picks: random.Random) -> None:
    """Give each event an arrival in the last hour (in the order they came) and a processing a moment later."""
    now = utcnow()
    with container.engine.begin() as connection:
        ids = list(connection.scalars(select(StripeEvent.id).order_by(StripeEvent.received_at, StripeEvent.id)))
        arrivals = sorted(now - timedelta(seconds=picks.uniform(60, 3540)) for _ in ids)
        for event_id, received in zip(ids, arrivals, strict=True):
            done = received + timedelta(seconds=picks.uniform(0.15, 2.5))
            connection.execute(
                update(StripeEvent)
                .where(StripeEvent.id == event_id)
                .values(received_at=received, status_changed_at=done, created=int(received.timestamp()) - 1)
            )
            connection.execute(
                update(StripeEvent)
                .where(StripeEvent.id == event_id, StripeEvent.processed_at.is_not(None))
                .values(processed_at=done)
            )
            connection.execute(
                update(EventAttempt)
                .where(EventAttempt.event_id == event_id)
                .values(started_at=received, finished_at=done)
            )
            connection.execute(update(AccessChange).where(AccessChange.event_id == event_id).values(changed_at=done))
            customer = connection.scalar(select(StripeEvent.customer_id).where(StripeEvent.id == event_id))
            connection.execute(
                update(CustomerSyncState).where(CustomerSyncState.customer_id == customer).values(synced_at=done)
            )
        for change in connection.execute(select(AccessChange).order_by(AccessChange.changed_at, AccessChange.id)):
            granted = update(Entitlement).where(
                Entitlement.customer_id == change.customer_id, Entitlement.feature_id == change.feature_id
            )
            connection.execute(granted.values(granted_at=change.changed_at))


def screenshot_pages(driver: Any, url: str, scene: Scene, directory: Path) -> list[Path]:
    pages = {
        "overview.png": "/console/",
        "events.png": "/console/events",
        "event.png": f"/console/events/{scene.failed_event}",
        "customer.png": f"/console/customers/{scene.customer}",
    }
    shots = []
    for name, path in pages.items():
        driver.get(f"{url}{path}")
        full_page_screenshot(driver, directory / name)
        keep_screenshot(directory / name)
        shots.append(directory / name)
    return shots
