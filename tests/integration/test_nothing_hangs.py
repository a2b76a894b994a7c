"""The receiver's breaker leaves events to the sweep; one sweep at a time; PostgreSQL's statement timeout."""

import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import text

from entitlement_sync.bootstrap import bootstrap
from entitlement_sync.breaker import CircuitBreaker
from entitlement_sync.db import transaction
from entitlement_sync.errors import QueueUnavailable, StorageUnavailable
from entitlement_sync.events import parse_event
from entitlement_sync.models import EventStatus, utcnow
from entitlement_sync.ports import StuckRule
from entitlement_sync.receive import Receiver
from entitlement_sync.stripe_signature import WebhookVerifier
from entitlement_sync.sweep import Sweeper
from entitlement_sync.tasks import build_stub_broker
from entitlement_sync.testing import active_entitlement, summary_event
from tests.conftest import TEST_DATABASE_URL, WEBHOOK_SECRET, settle, stored_event

RULE = StuckRule(received_grace=timedelta(seconds=10), stuck_after=timedelta(minutes=15))
on_postgres = pytest.mark.skipif(not TEST_DATABASE_URL, reason="PostgreSQL only (SQLite is single-host)")


class FlakyQueue:
    """A JobQueue that fails while `down`, and counts every call."""

    def __init__(self) -> None:
        self.down = True
        self.calls = 0

    def enqueue_event(self, event_id: str) -> None:
        self.calls += 1
        if self.down:
            raise QueueUnavailable("TimeoutError: Timeout reading from socket")

    def enqueue_events(self, event_ids: Sequence[str], customers: Mapping[str, str | None] | None = None) -> None:
        for event_id in event_ids:
            self.enqueue_event(event_id)

    def ping(self) -> None: ...


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def an_event(customer: str) -> bytes:
    return json.dumps(summary_event(customer, [active_entitlement("feat_api", "api_access")])).encode()


def receiver_with(container, queue, breaker) -> Receiver:
    return Receiver(container.new_session, WebhookVerifier((WEBHOOK_SECRET,)), queue, utcnow, None, breaker)


def test_after_a_broker_failure_the_receiver_stops_enqueueing_and_the_sweep_takes_the_events(container, worker):
    queue, clock = FlakyQueue(), Clock()
    receiver = receiver_with(container, queue, CircuitBreaker(5, clock=clock))
    accepted = [receiver.accept_event(parse_event(an_event(f"cus_{n}"))) for n in range(3)]
    assert [a.queued for a in accepted] == [False, False, False]
    assert queue.calls == 1  # only the first paid the broker's timeout
    assert {stored_event(container, a.event_id).status for a in accepted} == {EventStatus.RECEIVED}

    # Not before the receiver's grace: it might still be about to enqueue them itself.
    sweeper = Sweeper(container.new_session, container.queue, utcnow, RULE)
    assert sweeper.requeue_unfinished() == 0
    later = Sweeper(container.new_session, container.queue, lambda: utcnow() + timedelta(seconds=11), RULE)
    assert later.requeue_unfinished() == 3
    settle(container)
    assert {stored_event(container, a.event_id).status for a in accepted} == {EventStatus.PROCESSED}


def test_after_the_pause_one_probe_finds_the_broker_back_and_enqueueing_resumes(container):
    queue, clock = FlakyQueue(), Clock()
    receiver = receiver_with(container, queue, CircuitBreaker(5, clock=clock))
    receiver.accept_event(parse_event(an_event("cus_1")))
    queue.down, clock.now = False, 5.0
    accepted = [receiver.accept_event(parse_event(an_event(f"cus_{n}"))) for n in range(2, 5)]
    assert [a.queued for a in accepted] == [True, True, True]
    assert queue.calls == 4


class GatedQueue:
    """Enqueues through to a real queue, but the first call waits for the test to open the gate."""

    def __init__(self, inner) -> None:
        self.inner, self.started, self.gate = inner, threading.Event(), threading.Event()
        self.calls = 0

    def enqueue_event(self, event_id: str) -> None:
        self.calls += 1
        self.started.set()
        assert self.gate.wait(10), "the test never opened the gate"
        self.inner.enqueue_event(event_id)

    def enqueue_events(self, event_ids: Sequence[str], customers: Mapping[str, str | None] | None = None) -> None:
        for event_id in event_ids:
            self.enqueue_event(event_id)

    def ping(self) -> None: ...


@on_postgres
def test_only_one_sweeper_sweeps_at_a_time(container):
    receiver = receiver_with(container, FlakyQueue(), CircuitBreaker(60))
    for n in range(3):
        receiver.accept_event(parse_event(an_event(f"cus_{n}")))  # left received: the broker is "down"
    a_minute_later = lambda: utcnow() + timedelta(minutes=1)  # noqa: E731
    first_queue, second_queue = GatedQueue(container.queue), GatedQueue(container.queue)
    first = Sweeper(container.new_session, first_queue, a_minute_later, RULE)
    second = Sweeper(container.new_session, second_queue, a_minute_later, RULE)
    second_queue.gate.set()

    results: list[int] = []
    sweeping = threading.Thread(target=lambda: results.append(first.requeue_unfinished()))
    sweeping.start()
    assert first_queue.started.wait(10)  # the first sweeper is mid-sweep, holding the lock
    assert second.requeue_unfinished() == 0
    assert second_queue.calls == 0
    first_queue.gate.set()
    sweeping.join(10)
    assert results == [3]

    # The lock went with the first sweep's transaction: the second may sweep now (the jobs were lost, say).
    much_later = Sweeper(container.new_session, second_queue, lambda: utcnow() + timedelta(hours=1), RULE)
    assert much_later.requeue_unfinished() == 3


@on_postgres
def test_postgresql_cancels_a_statement_past_the_statement_timeout(settings, broker):
    quick = bootstrap(replace(settings, database_statement_timeout_seconds=0.2), broker=broker)
    with transaction(quick.new_session) as session:
        assert session.scalar(text("SHOW statement_timeout")) == "200ms"
    with pytest.raises(StorageUnavailable, match="statement timeout"), transaction(quick.new_session) as session:
        session.execute(text("SELECT pg_sleep(2)"))
    with transaction(quick.new_session) as session:  # the connection survived the cancel
        assert session.scalar(text("SELECT 1")) == 1
    quick.close()


def test_after_a_database_failure_the_receiver_answers_503_at_once_then_probes(settings, tmp_path):
    down_url = (
        "postgresql+psycopg://postgres@127.0.0.1:1/test"
        if settings.database_url.startswith("postgresql")
        else f"sqlite:///{tmp_path}/no/such/dir/db.sqlite"
    )
    down = bootstrap(replace(settings, database_url=down_url), broker=build_stub_broker())
    opened: list[int] = []

    def counting_sessions():  # type: ignore[no-untyped-def]
        opened.append(1)
        return down.new_session()

    clock = Clock()
    verifier, breaker = WebhookVerifier((WEBHOOK_SECRET,)), CircuitBreaker(2, clock)
    receiver = Receiver(counting_sessions, verifier, FlakyQueue(), utcnow, None, None, breaker)
    for _ in range(3):
        with pytest.raises(StorageUnavailable):
            receiver.accept_event(parse_event(an_event("cus_1")))
    assert len(opened) == 1  # the second and third were told at once, without waiting on the database
    clock.now = 2.0
    with pytest.raises(StorageUnavailable):
        receiver.accept_event(parse_event(an_event("cus_1")))
    assert len(opened) == 2  # the probe
    down.close()
