"""The jobs of webhooks that share a commit are sent together, in one round trip, before any of them is
answered; a failed send leaves every one of them `received` for the sweep and opens the enqueue breaker."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text

from entitlement_sync.breaker import CircuitBreaker
from entitlement_sync.errors import QueueUnavailable
from entitlement_sync.events import parse_event
from entitlement_sync.models import EventStatus, utcnow
from entitlement_sync.ports import StuckRule
from entitlement_sync.receive import Receiver
from entitlement_sync.redis_broker import new_messages
from entitlement_sync.stripe_signature import WebhookVerifier
from entitlement_sync.sweep import Sweeper
from entitlement_sync.tasks import DramatiqQueue, build_redis_broker, declare_process_event
from entitlement_sync.testing import active_entitlement, summary_event
from tests.conftest import TEST_REDIS_URL, WEBHOOK_SECRET, stored_event
from tests.integration.consuming import consume
from tests.integration.test_one_commit_per_webhook import eventually

RULE = StuckRule(received_grace=timedelta(seconds=10), stuck_after=timedelta(minutes=15))


class RecordingQueue:
    """A JobQueue that records each send (the ids of one call together), and refuses every one while `down`."""

    def __init__(self, down: bool = False) -> None:
        self.down = down
        self.sends: list[list[str]] = []

    def enqueue_event(self, event_id: str) -> None:
        self.enqueue_events([event_id])

    def enqueue_events(self, event_ids: Sequence[str], customers: Mapping[str, str | None] | None = None) -> None:
        self.sends.append(list(event_ids))
        if self.down:
            raise QueueUnavailable("ConnectionError: Connection refused")

    def ping(self) -> None: ...


def receiver_with(container: Any, queue: Any, breaker: CircuitBreaker) -> Receiver:
    """Wired as bootstrap wires it (the container's group-commit writer on PostgreSQL), on `queue`."""
    verifier = WebhookVerifier((WEBHOOK_SECRET,))
    grouped = container.receiver.grouped_writes
    return Receiver(container.new_session, verifier, queue, utcnow, False, breaker, grouped_writes=grouped)


def an_event(customer: str) -> bytes:
    return json.dumps(summary_event(customer, [active_entitlement("feat_api", "api_access")])).encode()


def accept_while_a_commit_waits(container: Any, receiver: Receiver, later: int) -> tuple[str, list[str], dict]:
    """One webhook whose commit waits on a lock, and `later` more that arrive meanwhile and share the next commit.
    Returns the first's id, the later ones' ids and every answer (Acceptance or error) by id."""
    grouped = container.receiver.grouped_writes
    first, rest = parse_event(an_event("cus_0")), [parse_event(an_event(f"cus_{n + 1}")) for n in range(later)]
    answers: dict[str, Any] = {}

    def accept(event: Any) -> None:
        answers[event.id] = receiver.accept_event(event)

    with container.engine.connect() as blocker:
        blocker.execute(text("INSERT INTO customer_sync_state (customer_id, seq, applied_seq) VALUES ('cus_0', 0, 0)"))
        blocker.commit()
        blocker.execute(text("SELECT seq FROM customer_sync_state WHERE customer_id = 'cus_0' FOR UPDATE"))
        before = grouped.transactions
        threads = [threading.Thread(target=accept, args=(first,))]
        threads[0].start()
        assert eventually(lambda: grouped.transactions == before + 1)
        threads += [threading.Thread(target=accept, args=(event,)) for event in rest]
        for thread in threads[1:]:
            thread.start()
        assert eventually(lambda: grouped.waiting == later)
        assert answers == {}
        blocker.rollback()
    for thread in threads:
        thread.join(30)
    assert grouped.transactions == before + 2
    return first.id, [event.id for event in rest], answers


def on_postgresql(container: Any) -> None:
    if container.receiver.grouped_writes is None:
        pytest.skip("group commit is PostgreSQL's (SQLite sends each job after its own commit)")


def test_the_jobs_of_webhooks_that_share_a_commit_are_sent_in_one_go(container):
    on_postgresql(container)
    queue = RecordingQueue()
    first, rest, answers = accept_while_a_commit_waits(
        container, receiver_with(container, queue, CircuitBreaker(60)), 4
    )

    assert [sorted(ids) for ids in queue.sends] == [[first], sorted(rest)]
    assert all(answer.queued for answer in answers.values())
    assert {stored_event(container, event_id).status for event_id in [first, *rest]} == {EventStatus.QUEUED}


def test_a_failed_send_of_a_batch_leaves_all_of_it_received_for_the_sweep_and_opens_the_breaker(container):
    on_postgresql(container)
    queue, breaker = RecordingQueue(down=True), CircuitBreaker(60)
    receiver = receiver_with(container, queue, breaker)
    first, rest, answers = accept_while_a_commit_waits(container, receiver, 3)

    # The later ones chose to send before the first send failed; they waited behind it, and are not sent: on a
    # Redis that hangs they would pay its timeout a second time.
    assert queue.sends == [[first]]
    assert [(answer.status, answer.queued) for answer in answers.values()] == [("accepted", False)] * 4
    assert {stored_event(container, event_id).status for event_id in [first, *rest]} == {EventStatus.RECEIVED}
    assert breaker.is_open
    later = receiver.accept_event(parse_event(an_event("cus_9")))  # the breaker is open: no send is tried
    assert (later.queued, len(queue.sends)) == (False, 1)

    a_minute_later = Sweeper(container.new_session, container.queue, lambda: utcnow() + timedelta(minutes=1), RULE)
    assert a_minute_later.requeue_unfinished() == 5


redis_only = pytest.mark.skipif(not TEST_REDIS_URL, reason="the batch send is Redis'; the stub broker sends one by one")


@redis_only
def test_a_batch_sent_through_redis_is_what_a_worker_consumes(container, settings):
    container.queue.enqueue_events(["evt_a", "evt_b", "evt_c"])

    messages = consume(container.broker, settings.queue_name, 3)
    assert [(message.actor_name, message.args) for message in messages] == [
        ("process_event", ("evt_a",)),
        ("process_event", ("evt_b",)),
        ("process_event", ("evt_c",)),
    ]


@redis_only
def test_a_batch_sent_to_a_redis_that_is_down_raises_queue_unavailable_and_leaves_the_events_received(
    container, settings
):
    # A Redis of its own, on a port nothing listens on: the machine's Redis is never stopped.
    down = replace(settings, redis_url="redis://127.0.0.1:1/0", redis_connect_timeout_seconds=1)
    broker = build_redis_broker(down)
    try:
        queue = DramatiqQueue(broker, declare_process_event(broker, container.syncer, down))
        with pytest.raises(QueueUnavailable, match="ConnectionError"):
            queue.enqueue_events(["evt_a", "evt_b"])

        receiver = receiver_with(container, queue, CircuitBreaker(60))
        acceptance = receiver.accept_event(parse_event(an_event("cus_1")))
        assert (acceptance.status, acceptance.queued) == ("accepted", False)
        assert stored_event(container, acceptance.event_id).status == EventStatus.RECEIVED
    finally:
        broker.close()


@redis_only
def test_a_batch_sent_on_a_maintenance_turn_goes_through_dramatiqs_own_script_and_is_consumed_alike(
    container, settings
):
    broker = container.broker
    chance, broker.maintenance_chance = broker.maintenance_chance, 1_000_000  # every enqueue does the maintenance
    try:
        container.queue.enqueue_events(["evt_m1", "evt_m2"])
    finally:
        broker.maintenance_chance = chance

    messages = consume(broker, settings.queue_name, 2)
    assert [message.args for message in messages] == [("evt_m1",), ("evt_m2",)]


@redis_only
def test_a_batch_of_messages_built_without_a_redis_id_gets_one_each_and_keeps_its_fields(container, settings):
    actor = container.broker.get_actor("process_event")
    sent = [actor.message("evt_x1"), actor.message_with_options(args=("evt_x2",), note="é\ud800")]
    container.broker.enqueue_all(sent)

    got = consume(container.broker, settings.queue_name, 2)
    assert [message.message_id for message in got] == [message.message_id for message in sent]
    assert [{**message.options, "redis_message_id": None} for message in got] == [
        {**message.options, "redis_message_id": None} for message in sent
    ]
    assert len({message.options["redis_message_id"] for message in got}) == 2


def test_messages_built_for_a_batch_are_the_actors_own_each_with_random_ids_of_their_own(container):
    actor = container.broker.get_actor("process_event")
    built = new_messages(actor, [(("evt_a",), {"customer": "cus_a"}), (("evt_b",), {})])

    plain = actor.message("evt_a")
    assert [(m.queue_name, m.actor_name, m.args, m.kwargs) for m in built] == [
        (plain.queue_name, plain.actor_name, ("evt_a",), {}),
        (plain.queue_name, plain.actor_name, ("evt_b",), {}),
    ]
    assert [{**m.options, "redis_message_id": None} for m in built] == [
        {"customer": "cus_a", "redis_message_id": None},
        {"redis_message_id": None},
    ]
    ids = [uuid.UUID(m.message_id) for m in built] + [uuid.UUID(m.options["redis_message_id"]) for m in built]
    assert len(set(ids)) == 4
    assert {(found.version, found.variant) for found in ids} == {(4, uuid.RFC_4122)}
