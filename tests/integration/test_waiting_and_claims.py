"""No permanent failure for a passing cause (waiting, superseded), and exclusive claims on an event."""

from dataclasses import replace
from datetime import timedelta

import pytest

from entitlement_sync import store
from entitlement_sync.bootstrap import bootstrap
from entitlement_sync.db import transaction
from entitlement_sync.errors import StripeUnavailable
from entitlement_sync.events import event_from_payload
from entitlement_sync.models import EventStatus, utcnow
from entitlement_sync.ports import ActiveEntitlement, EntitlementsRead, WaitRule
from entitlement_sync.sync import Syncer
from tests.conftest import stored_event
from tests.fakes import summary_signal as summary_event  # these tests are of the fetch path

API = ActiveEntitlement("ent_1", "feat_api", "api_access")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self):
        return self.now

    def advance(self, **delta):
        self.now += timedelta(**delta)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def service(settings, broker, fake_stripe, container, clock, request):
    """The container's database, with a hand-moved clock, a 30 s sweep and a 10-minute window for Stripe."""
    timed = replace(settings, sweep_interval_seconds=30, retry_unavailable_for_seconds=600)
    built = bootstrap(timed, broker=broker, clock=clock)
    request.addfinalizer(built.close)
    return built


def accept(container, payload):
    container.receiver.accept_event(event_from_payload(payload))
    return payload["id"]


def test_stripe_unavailable_past_the_retries_waits_with_doubling_pauses_then_fails_past_the_window(
    service, fake_stripe, clock
):
    fake_stripe.faults.server_error_share, fake_stripe.faults.server_error_status = 1.0, 503
    event_id = accept(service, summary_event("cus_1", []))
    started = clock.now
    pauses = []
    outcome = service.syncer.process_event(event_id, final_attempt=True)
    while outcome.status == EventStatus.WAITING:
        row = stored_event(service, event_id)
        pauses.append((row.retry_at - clock.now).total_seconds())
        assert row.unavailable_since == started
        clock.now = row.retry_at - timedelta(seconds=1)
        assert service.sweeper.requeue_unfinished() == 0  # not due yet, and never "stuck"
        clock.advance(seconds=1)
        assert service.sweeper.requeue_unfinished() == 1
        # A job from the sweep gets one try, whatever its queue retries say: the sweep spaces the tries.
        outcome = service.syncer.process_event(event_id, final_attempt=False)
    assert pauses == [30, 60, 120, 240, 480]
    assert outcome.status == EventStatus.FAILED
    row = stored_event(service, event_id)
    assert row.status == EventStatus.FAILED and row.retry_at is None
    assert "HTTP 503" in row.last_error and "RETRY_UNAVAILABLE_FOR_SECONDS" in row.last_error


def test_a_waiting_event_is_processed_once_stripe_is_back_with_no_operator(service, fake_stripe, clock):
    fake_stripe.set_entitlements("cus_1", [("feat_api", "api_access")])
    fake_stripe.fail_next(429, times=2)
    event_id = accept(service, summary_event("cus_1", []))
    assert service.syncer.process_event(event_id).status == EventStatus.WAITING
    clock.advance(seconds=30)
    assert service.sweeper.requeue_unfinished() == 1
    assert service.syncer.process_event(event_id).status == EventStatus.WAITING
    clock.advance(seconds=60)
    assert service.sweeper.requeue_unfinished() == 1
    assert service.syncer.process_event(event_id).status == EventStatus.PROCESSED
    row = stored_event(service, event_id)
    assert (row.status, row.waits, row.retry_at, row.unavailable_since) == (EventStatus.PROCESSED, 0, None, None)
    assert service.reader.has_access("cus_1", "api_access")


def test_the_pause_grows_to_an_hour_at_most():
    wait = WaitRule(first_pause=timedelta(seconds=30))
    assert [wait.pause(n).total_seconds() for n in (0, 1, 2, 6, 7, 40)] == [30, 60, 120, 1920, 3600, 3600]


def test_a_401_still_fails_at_once(service, fake_stripe):
    fake_stripe.fail_next(401)
    event_id = accept(service, summary_event("cus_1", []))
    assert service.syncer.process_event(event_id, final_attempt=False).status == EventStatus.FAILED


def test_failed_and_waiting_events_are_superseded_by_a_later_applied_fetch(service, fake_stripe):
    fake_stripe.fail_next(401)
    failed = accept(service, summary_event("cus_1", []))
    service.syncer.process_event(failed)
    fake_stripe.fail_next(503)
    waiting = accept(service, summary_event("cus_1", []))
    service.syncer.process_event(waiting)
    other_customer = accept(service, summary_event("cus_2", []))
    fake_stripe.fail_next(401)
    service.syncer.process_event(other_customer)
    assert [stored_event(service, e).status for e in (failed, waiting)] == [EventStatus.FAILED, EventStatus.WAITING]

    fake_stripe.set_entitlements("cus_1", [("feat_api", "api_access")])
    later = accept(service, summary_event("cus_1", []))
    assert service.syncer.process_event(later).status == EventStatus.PROCESSED

    assert [stored_event(service, e).status for e in (failed, waiting)] == [EventStatus.SUPERSEDED] * 2
    assert stored_event(service, waiting).retry_at is None
    assert stored_event(service, other_customer).status == EventStatus.FAILED  # another customer's: untouched
    assert service.reader.has_access("cus_1", "api_access")


class StoresAnEventMidFetch:
    """A fetch during which Stripe sends another event: that event was stored after the fetch started."""

    def __init__(self, container, payload):
        self._container, self._payload = container, payload

    def read_active_entitlements(self, customer_id):
        accept(self._container, self._payload)
        return EntitlementsRead([API])


def test_a_fetch_that_started_before_the_event_was_stored_does_not_supersede_it(service, fake_stripe):
    late = summary_event("cus_1", [])
    Syncer(service.new_session, StoresAnEventMidFetch(service, late), utcnow).sync_customer("cus_1")
    fake_stripe.fail_next(401)
    service.syncer.process_event(late["id"])
    assert service.sweeper.requeue_unfinished() == 0
    assert stored_event(service, late["id"]).status == EventStatus.FAILED


def test_the_sweep_supersedes_failed_events_whose_customer_a_later_fetch_synced(service, fake_stripe):
    event_id = accept(service, summary_event("cus_1", []))
    service.syncer.sync_customer("cus_1")  # a fetch that started after the event was stored
    with transaction(service.new_session) as session:  # failed before the apply, as a pre-0003 row would be
        store.inbox.set_status(session, event_id, EventStatus.FAILED, utcnow())
    service.sweeper.requeue_unfinished()
    assert stored_event(service, event_id).status == EventStatus.SUPERSEDED


def test_only_the_attempt_that_owns_an_event_may_finish_it(service):
    event_id = accept(service, summary_event("cus_1", []))
    now = utcnow()
    with transaction(service.new_session) as session:
        _, first = store.attempts.claim_for_processing(session, event_id, now)
    with transaction(service.new_session) as session:  # a duplicate job (or the sweep's) claims it again
        _, second = store.attempts.claim_for_processing(session, event_id, now)
    with transaction(service.new_session) as session:
        assert store.attempts.finish_attempt(session, event_id, second, EventStatus.PROCESSED, None, now)
    with transaction(service.new_session) as session:  # the loser ends late, with an error: a no-op
        assert not store.attempts.finish_attempt(session, event_id, first, EventStatus.FAILED, "HTTP 503", now)
    with transaction(service.new_session) as session:
        assert store.attempts.claim_for_processing(session, event_id, now) is None  # processed stays processed
        attempts = {a.id: a for a in store.inbox.attempts_of(session, event_id)}
    row = stored_event(service, event_id)
    assert (row.status, row.last_error, row.claimed_by) == (EventStatus.PROCESSED, None, None)
    assert attempts[first].outcome == "overtaken" and "HTTP 503" in attempts[first].error
    assert attempts[second].outcome == EventStatus.PROCESSED


class DuplicateJobWinsMidFetch:
    """The first attempt's fetch is slow: meanwhile a duplicate job processes the event; then Stripe fails."""

    def __init__(self):
        self.syncer = None
        self.calls = 0

    def read_active_entitlements(self, customer_id):
        self.calls += 1
        if self.calls == 1:
            self.duplicate = self.syncer.process_event(self.event_id)
            raise StripeUnavailable("APIError: HTTP 503")
        return EntitlementsRead([API])


def test_a_duplicate_job_that_loses_the_race_never_moves_a_processed_event_back(service):
    source = DuplicateJobWinsMidFetch()
    source.syncer = Syncer(service.new_session, source, utcnow)
    for final_attempt in (False, True):  # the loser would leave it queued (to retry), or failed: neither lands
        source.event_id, source.calls = accept(service, summary_event("cus_1", [])), 0
        outcome = source.syncer.process_event(source.event_id, final_attempt=final_attempt)
        assert source.duplicate.status == EventStatus.PROCESSED
        assert outcome.status is None  # overtaken; and no exception, so the queue does not retry it
        assert stored_event(service, source.event_id).status == EventStatus.PROCESSED
        with service.new_session() as session:
            outcomes = [attempt.outcome for attempt in store.inbox.attempts_of(session, source.event_id)]
        assert sorted(outcomes) == ["overtaken", "processed"]


class ClaimedAgainMidFetch:
    """While the first attempt's fetch runs, a duplicate job claims the event (and has not finished it yet)."""

    def __init__(self, service):
        self.service = service
        self.event_id = ""

    def read_active_entitlements(self, customer_id):
        with transaction(self.service.new_session) as session:
            _, self.second = store.attempts.claim_for_processing(session, self.event_id, utcnow())
        return EntitlementsRead([API])


def test_a_fetch_applied_by_an_attempt_that_lost_the_event_leaves_the_event_to_its_owner(service):
    """The write lands (it is the newest state), but the finish sent with it sees another attempt owns the event."""
    source = ClaimedAgainMidFetch(service)
    source.event_id = accept(service, summary_event("cus_1", []))
    outcome = Syncer(service.new_session, source, utcnow).process_event(source.event_id)
    assert outcome.status is None and outcome.sync is not None and outcome.sync.applied
    assert service.reader.has_access("cus_1", API.lookup_key)
    row = stored_event(service, source.event_id)
    assert (row.status, row.claimed_by) == (EventStatus.PROCESSING, source.second)
    with service.new_session() as session:
        attempts = {a.id: a.outcome for a in store.inbox.attempts_of(session, source.event_id)}
    (first,) = attempts.keys() - {source.second}
    assert (attempts[first], attempts[source.second]) == ("overtaken", None)
