"""The subscription mirror is context, the access table the contract: a mirror the database refuses, or whose
recompute fails, is taken back whole (its savepoint), and the event still syncs the customer's access."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from entitlement_sync.effective import AccessPolicy
from entitlement_sync.events import event_from_payload
from entitlement_sync.models import EffectiveAccess, EventStatus, Subscription
from entitlement_sync.testing import event, subscription
from tests.conftest import TEST_DATABASE_URL
from tests.fakes import syncer_with_policy

API = ("feat_api", "api_access")
PRO = [("price_pro", "prod_pro")]


def stored(container, payload) -> str:
    container.receiver.accept_event(event_from_payload(payload))
    return payload["id"]


def count(container, entity) -> int:
    with container.new_session() as session:
        return int(session.scalar(select(func.count()).select_from(entity)))


class RecomputeFailsOnce(AccessPolicy):
    """A policy whose first recompute (the mirror's) fails as a bug would, after the mirror's row was written."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.failed = 0

    def recompute(self, *args, **kwargs):
        if not self.failed:
            self.failed += 1
            raise RuntimeError("a bug in the recompute")
        return super().recompute(*args, **kwargs)


def test_a_mirror_whose_recompute_fails_is_taken_back_and_the_event_still_syncs(container, fake_stripe):
    fake_stripe.set_entitlements("cus_1", [API])
    syncer, policy = syncer_with_policy(container, RecomputeFailsOnce)
    created = stored(container, event("customer.subscription.created", subscription("sub_1", "cus_1", prices=PRO)))

    outcome = syncer.process_event(created, customer_id="cus_1")

    assert policy.failed == 1
    assert outcome.status == EventStatus.PROCESSED
    assert container.reader.has_access("cus_1", "api_access")
    # The row was written before the recompute failed: the savepoint took it back with the recompute's work.
    assert count(container, Subscription) == 0
    # A later event mirrors as ever: the savepoint left the transaction, and the connection, usable.
    updated = event("customer.subscription.updated", subscription("sub_1", "cus_1", prices=PRO), previous_attributes={})
    assert container.syncer.process_event(stored(container, updated)).status == EventStatus.PROCESSED
    assert count(container, Subscription) == 1


@pytest.mark.skipif(not TEST_DATABASE_URL, reason="SQLite does not enforce a column's length")
def test_a_subscription_the_database_refuses_is_left_out_and_the_event_still_syncs(container, fake_stripe):
    fake_stripe.set_entitlements("cus_1", [API])
    odd = subscription("sub_1", "cus_1", prices=PRO, status="a_status_stripe_has_not_invented_yet_" * 2)
    created = stored(container, event("customer.subscription.created", odd))

    outcome = container.syncer.process_event(created, customer_id="cus_1")

    assert outcome.status == EventStatus.PROCESSED
    assert count(container, Subscription) == 0  # refused: `status` is varchar(30)
    assert container.reader.has_access("cus_1", "api_access")
    assert count(container, EffectiveAccess) == 1
