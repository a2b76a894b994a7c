"""A bug in the worker's first transaction (the claim and what it decides) rolls it back; the event is then claimed
alone, by a statement that runs none of the worker's reads, to keep the traceback on its row for ops."""

from __future__ import annotations

import pytest

from entitlement_sync.effective import AccessPolicy
from entitlement_sync.events import event_from_payload
from entitlement_sync.models import EventStatus
from entitlement_sync.testing import active_entitlement, summary_event
from tests.conftest import stored_event
from tests.fakes import syncer_with_policy


class PlanningFails(AccessPolicy):
    """A policy with a bug: planning raises (a complete payload is planned and written in the claim's transaction)."""

    def plan(self, *args, **kwargs):
        raise RuntimeError("a bug in the policy")


@pytest.mark.parametrize(("final", "status"), [(False, EventStatus.QUEUED), (True, EventStatus.FAILED)])
def test_a_bug_in_the_first_transaction_is_raised_and_its_traceback_kept_on_the_event(
    container, fake_stripe, final, status
):
    syncer, _ = syncer_with_policy(container, PlanningFails)
    payload = summary_event("cus_1", [active_entitlement("feat_api", "api_access")])  # complete: written at claim
    container.receiver.accept_event(event_from_payload(payload))

    with pytest.raises(RuntimeError, match="a bug in the policy"):
        syncer.process_event(payload["id"], customer_id="cus_1", final_attempt=final)

    stored = stored_event(container, payload["id"])
    assert stored.status == status
    assert stored.last_error.startswith("RuntimeError: a bug in the policy\nTraceback")
    assert "plan" in stored.last_error
    assert not container.reader.has_access("cus_1", "api_access")  # the claim's transaction was rolled back
