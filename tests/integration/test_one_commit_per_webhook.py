"""The receiver's cost in the database: one commit per webhook (one statement on PostgreSQL), the event stored
already `queued` and sent after the commit; only a failed send takes a second transaction, back to `received`."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, select, text

from entitlement_sync.bootstrap import bootstrap
from entitlement_sync.breaker import CircuitBreaker
from entitlement_sync.errors import StorageUnavailable
from entitlement_sync.events import parse_event
from entitlement_sync.grouped_writes import GroupedWrites
from entitlement_sync.models import CustomerSyncState, EventStatus, utcnow
from entitlement_sync.ports import StuckRule
from entitlement_sync.receive import Receiver
from entitlement_sync.stripe_signature import WebhookVerifier
from entitlement_sync.sweep import Sweeper
from entitlement_sync.testing import active_entitlement, summary_event
from tests.conftest import WEBHOOK_SECRET, eventually, post_webhook, stored_event
from tests.fakes import BrokerDown

RULE = StuckRule(received_grace=timedelta(seconds=10), stuck_after=timedelta(minutes=15))


@dataclass
class Traffic:
    commits: int = 0  # COMMITs, and statements sent in autocommit (each its own transaction)
    statements: list[str] = field(default_factory=list)
    grouped: GroupedWrites | None = None
    grouped_before: int = 0

    @property
    def transactions(self) -> int:
        """Transactions through the engine, and those of the receiver's writer (PostgreSQL) meanwhile."""
        grouped = self.grouped.transactions - self.grouped_before if self.grouped else 0
        return self.commits + grouped


@contextmanager
def database_traffic(engine: Any, grouped: GroupedWrites | None = None) -> Iterator[Traffic]:
    """Every transaction committed and every statement sent through `engine` (or `grouped`) meanwhile."""
    seen = Traffic(grouped=grouped, grouped_before=grouped.transactions if grouped else 0)

    def committed(_connection: Any) -> None:
        seen.commits += 1

    def executed(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.statements.append(statement)
        if conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
            seen.commits += 1

    event.listen(engine, "commit", committed)
    event.listen(engine, "before_cursor_execute", executed)
    try:
        yield seen
    finally:
        event.remove(engine, "commit", committed)
        event.remove(engine, "before_cursor_execute", executed)


def a_summary(customer: str = "cus_1", **fields: Any) -> dict[str, Any]:
    return summary_event(customer, [active_entitlement("feat_api", "api_access")], **fields)


def customer_seq(container: Any, customer: str) -> int | None:
    with container.new_session() as session:
        return session.scalar(select(CustomerSyncState.seq).where(CustomerSyncState.customer_id == customer))


def on_postgresql(container: Any) -> bool:
    return bool(container.engine.dialect.name == "postgresql")


def grouped_writes_of(container: Any) -> GroupedWrites | None:
    return container.receiver.grouped_writes  # type: ignore[no-any-return]


def test_an_accepted_webhook_costs_one_commit_and_on_postgresql_one_statement(client, container):
    first, second = a_summary("cus_1"), a_summary("cus_1")
    with database_traffic(container.engine, grouped_writes_of(container)) as traffic:
        assert post_webhook(client, first).json["status"] == "accepted"
    assert traffic.transactions == 1
    if on_postgresql(container):
        # The insert and the customer's sequence, one statement on the writer's own connection: none here.
        assert traffic.statements == []
    with database_traffic(container.engine, grouped_writes_of(container)) as traffic:
        assert post_webhook(client, second).json["status"] == "accepted"
    assert traffic.transactions == 1

    stored = [stored_event(container, event["id"]) for event in (first, second)]
    assert [(row.status, row.customer_seq) for row in stored] == [(EventStatus.QUEUED, 1), (EventStatus.QUEUED, 2)]
    assert customer_seq(container, "cus_1") == 2


def test_a_duplicate_or_an_ignored_webhook_costs_one_commit_and_leaves_the_sequence_alone(client, container):
    event = a_summary("cus_1")
    post_webhook(client, event)
    with database_traffic(container.engine, grouped_writes_of(container)) as traffic:
        assert post_webhook(client, event).json["status"] == "duplicate"
        assert post_webhook(client, a_summary("cus_1", livemode=True)).json["status"] == "ignored"
    assert traffic.transactions == 2
    assert customer_seq(container, "cus_1") == 1
    assert stored_event(container, event["id"]).customer_seq == 1


def receiver_with(container: Any, queue: Any) -> Receiver:
    """A receiver wired as bootstrap wires it, on `queue`, whose breaker stays open a minute after a failure."""
    verifier = WebhookVerifier((WEBHOOK_SECRET,))
    return Receiver(
        container.new_session,
        verifier,
        queue,
        utcnow,
        False,
        CircuitBreaker(60),
        grouped_writes=grouped_writes_of(container),
    )


def test_a_failed_send_puts_the_event_back_to_received_and_later_ones_are_stored_received_at_once(container):
    receiver = receiver_with(container, BrokerDown("refused"))
    first, second = a_summary("cus_1"), a_summary("cus_2")

    with database_traffic(container.engine, grouped_writes_of(container)) as traffic:
        acceptance = receiver.accept_event(parse_event(_body(first)))
    assert (acceptance.status, acceptance.queued) == ("accepted", False)
    assert traffic.transactions == 2  # the rare path: stored queued, the send failed, back to received
    assert stored_event(container, first["id"]).status == EventStatus.RECEIVED

    with database_traffic(container.engine, grouped_writes_of(container)) as traffic:
        receiver.accept_event(parse_event(_body(second)))  # the breaker is open: no send is tried
    assert traffic.transactions == 1
    assert stored_event(container, second["id"]).status == EventStatus.RECEIVED

    a_minute_later = Sweeper(container.new_session, container.queue, lambda: utcnow() + timedelta(minutes=1), RULE)
    assert a_minute_later.requeue_unfinished() == 2  # within RECEIVED_GRACE_SECONDS' reach


def test_an_event_committed_queued_whose_send_never_happened_is_requeued_after_stuck_after(container):
    """A process killed between the commit and the send: the row says `queued`, and no job exists."""
    event = a_summary("cus_1")
    killed = receiver_with(container, _LostSend())
    assert killed.accept_event(parse_event(_body(event))).queued
    assert stored_event(container, event["id"]).status == EventStatus.QUEUED

    def sweep_after(elapsed: timedelta) -> int:
        return Sweeper(container.new_session, container.queue, lambda: utcnow() + elapsed, RULE).requeue_unfinished()

    assert sweep_after(timedelta(minutes=1)) == 0
    assert sweep_after(timedelta(minutes=16)) == 1


class _LostSend:
    """A JobQueue whose sends vanish, as if the process died before sending."""

    def enqueue_event(self, event_id: str) -> None:
        pass

    def enqueue_events(self, event_ids: Sequence[str], customers: Mapping[str, str | None] | None = None) -> None:
        for event_id in event_ids:
            self.enqueue_event(event_id)

    def ping(self) -> None:
        pass


def _body(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


def test_on_postgresql_webhooks_that_arrive_during_a_commit_share_the_next_one(container):
    grouped = grouped_writes_of(container)
    if grouped is None:
        pytest.skip("group commit is PostgreSQL's (SQLite has one writer anyway)")
    receiver = container.receiver
    earlier = a_summary("cus_0")
    receiver.accept_event(parse_event(_body(earlier)))
    held, twice = a_summary("cus_0"), a_summary("cus_3")
    # Two of one customer, one ignored, one already stored, one delivered twice at once.
    rest = [a_summary("cus_1"), a_summary("cus_1"), a_summary("cus_2", livemode=True), earlier, twice, twice]
    answers: list[tuple[str, str]] = []

    def accept(payload: dict[str, Any]) -> None:
        answers.append((payload["id"], receiver.accept_event(parse_event(_body(payload))).status))

    with container.engine.connect() as blocker:  # another transaction holds cus_0's row: the writer waits on it
        blocker.execute(text("SELECT seq FROM customer_sync_state WHERE customer_id = 'cus_0' FOR UPDATE"))
        before = grouped.transactions
        threads = [threading.Thread(target=accept, args=(held,))]
        threads[0].start()
        assert eventually(lambda: grouped.transactions == before + 1)
        threads += [threading.Thread(target=accept, args=(payload,)) for payload in rest]
        for thread in threads[1:]:
            thread.start()
        assert eventually(lambda: grouped.waiting == len(rest))
        assert answers == []  # nobody is answered before their transaction has committed
        blocker.rollback()
    for thread in threads:
        thread.join(30)

    assert grouped.transactions == before + 2
    expected = [(held["id"], "accepted"), (earlier["id"], "duplicate"), (twice["id"], "accepted")]
    expected += [(rest[0]["id"], "accepted"), (rest[1]["id"], "accepted"), (rest[2]["id"], "ignored")]
    assert sorted(answers) == sorted([*expected, (twice["id"], "duplicate")])
    assert sorted(stored_event(container, p["id"]).customer_seq for p in rest[:2]) == [1, 2]
    assert stored_event(container, twice["id"]).customer_seq == 1
    held_row = stored_event(container, held["id"])
    assert (held_row.status, held_row.customer_seq) == (EventStatus.QUEUED, 2)
    assert stored_event(container, rest[2]["id"]).status == EventStatus.IGNORED
    assert [customer_seq(container, c) for c in ("cus_0", "cus_1", "cus_2", "cus_3")] == [2, 2, None, 1]


def test_on_postgresql_closing_the_container_hands_back_the_writers_connection(settings, broker, container):
    if not on_postgresql(container):
        pytest.skip("group commit is PostgreSQL's")

    def connections_to_the_database() -> int:
        with container.engine.connect() as connection:
            sql = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            return int(connection.execute(text(sql)).scalar_one())

    before = connections_to_the_database()
    other = bootstrap(settings, broker=broker)
    other.receiver.accept_event(parse_event(_body(a_summary("cus_1"))))
    assert connections_to_the_database() == before + 1  # the writer's, kept between batches
    other.close()
    assert eventually(lambda: connections_to_the_database() == before)
    with pytest.raises(StorageUnavailable):  # closed: nothing waits for a writer that is gone
        other.receiver.accept_event(parse_event(_body(a_summary("cus_2"))))
