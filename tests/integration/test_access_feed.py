"""The access feed on a real database (SQLite, or PostgreSQL with TEST_DATABASE_URL): what it publishes, the
snapshot, 410 for a cursor not kept, long polls; and on PostgreSQL, concurrent writers committing out of
order never make a follower skip a change."""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event, select, text
from sqlalchemy.orm import Session

from entitlement_sync import store
from entitlement_sync.bootstrap import Container, bootstrap
from entitlement_sync.db import transaction
from entitlement_sync.errors import FeedCursorGone
from entitlement_sync.feed import AccessFeed
from entitlement_sync.models import AccessFeedEntry, EffectiveAccess
from entitlement_sync.settings import Settings
from entitlement_sync.telemetry import REGISTRY
from tests.conftest import READ_TOKEN, TEST_DATABASE_URL, eventually

on_postgres = pytest.mark.skipif(not TEST_DATABASE_URL, reason="PostgreSQL only (SQLite runs one writer at a time)")
AUTH = {"Authorization": f"Bearer {READ_TOKEN}"}
LATER = datetime.now(UTC) + timedelta(days=30)


def grant(container: Container, customer: str, key: str = "api_access") -> int:
    return container.overrides.grant(customer, key, LATER, "test", "tester").id


def deny(container: Container, customer: str, key: str = "api_access") -> int:
    return container.overrides.deny(customer, key, None, "test", "tester").id


def table(container: Container) -> dict[tuple[str, str], bool]:
    """What a copy must end with: every granted (customer, key)."""
    with container.new_session() as session:
        rows = session.execute(select(EffectiveAccess.customer_id, EffectiveAccess.lookup_key, EffectiveAccess.granted))
        return {(customer, key): True for customer, key, granted in rows if granted}


class Follower:
    """A consumer as the issue describes one: a snapshot, then the feed, applied in order to its own copy."""

    def __init__(self, feed: AccessFeed, page: int = 2) -> None:
        self.feed = feed
        self.copy: dict[tuple[str, str], bool] = {}
        cursors, after = [], ""
        while True:
            snapshot = feed.snapshot(after, page)
            cursors.append(snapshot.cursor)
            self.copy.update({(r.customer, r.lookup_key): True for r in snapshot.rows if r.granted})
            if snapshot.next_after_customer is None:
                break
            after = snapshot.next_after_customer
        self.cursor = min(cursors)  # pages taken at different moments: replay from the oldest

    def poll(self, wait: float = 0.0) -> int:
        page = self.feed.changes(self.cursor, 50, wait)
        for change in page.changes:
            if change.change == "granted":
                self.copy[change.customer, change.lookup_key] = True
            else:
                self.copy.pop((change.customer, change.lookup_key), None)
        self.cursor = page.next_cursor
        return len(page.changes)

    def catch_up(self) -> None:
        while self.poll():
            pass


def test_the_feed_lists_each_flip_oldest_first_with_its_cause_and_cursor(container: Container, client: Any) -> None:
    granted = grant(container, "cus_a")
    denied = deny(container, "cus_a")
    grant(container, "cus_b", "sso")

    answer = client.get("/v1/access-changes?after=0", headers=AUTH).get_json()

    changes = [(c["customer"], c["lookup_key"], c["change"], c["cause"]) for c in answer["changes"]]
    assert changes == [
        ("cus_a", "api_access", "granted", f"override:{granted}"),
        ("cus_a", "api_access", "revoked", f"override:{denied}"),
        ("cus_b", "sso", "granted", changes[2][3]),
    ]
    cursors = [c["cursor"] for c in answer["changes"]]
    assert cursors == sorted(cursors) and answer["next_cursor"] == cursors[-1]
    assert answer["changes"][0]["feature"] is None  # a grant made here rests on no Stripe feature
    following = client.get(f"/v1/access-changes?after={cursors[0]}", headers=AUTH).get_json()
    assert [c["cursor"] for c in following["changes"]] == cursors[1:]


def test_a_stripe_grant_names_its_feature_and_event(container: Container, fake_stripe: Any, client: Any) -> None:
    feature = fake_stripe.create_feature("api_access", feature_id="feat_api")
    fake_stripe.subscribe("cus_s", [fake_stripe.create_product([feature])])
    container.syncer.sync_customer("cus_s")

    (change,) = client.get("/v1/access-changes?after=0", headers=AUTH).get_json()["changes"]

    assert (change["customer"], change["change"], change["feature"]) == ("cus_s", "granted", "feat_api")


def test_a_reason_only_change_is_history_but_not_news(container: Container, fake_stripe: Any) -> None:
    """Granted by an override, then by Stripe too: `updated` in the history, nothing in the feed."""
    grant(container, "cus_u")
    before = container.feed.changes(0).next_cursor
    feature = fake_stripe.create_feature("api_access", feature_id="feat_api")
    fake_stripe.subscribe("cus_u", [fake_stripe.create_product([feature])])
    container.syncer.sync_customer("cus_u")

    with container.new_session() as session:
        kinds = [c.change for c in store.effective.changes_of(session, "cus_u", None, 10)]
    assert "updated" in kinds
    assert container.feed.changes(before).changes == []


def test_a_rolled_back_transaction_publishes_nothing(container: Container) -> None:
    with pytest.raises(RuntimeError), transaction(container.new_session) as session:
        store.overrides.add_override(
            session,
            customer_id="cus_r",
            lookup_key="api_access",
            kind="grant",
            expires_at=LATER,
            created_by="t",
            reason="t",
            now=datetime.now(UTC),
        )
        assert container.access_policy.recompute(session, "cus_r", "test")
        raise RuntimeError("the use case failed after recording")
    grant(container, "cus_next")

    (change,) = container.feed.changes(0).changes
    assert change.customer == "cus_next"


def test_a_snapshot_then_the_feed_ends_equal_to_the_table(container: Container, client: Any) -> None:
    for n in range(5):
        grant(container, f"cus_{n}")
    deny(container, "cus_1")
    follower = Follower(container.feed, page=2)
    grant(container, "cus_9", "sso")
    deny(container, "cus_3")

    follower.catch_up()

    assert follower.copy == table(container)
    first = client.get("/v1/access-snapshot?limit=2", headers=AUTH).get_json()
    assert [r["customer"] for r in first["access"]] == ["cus_0", "cus_1", "cus_2"][: len(first["access"])]
    assert first["next_after_customer"] == "cus_1" and first["cursor"] == follower.cursor == 8


def test_an_empty_snapshot_still_says_its_cursor(container: Container, client: Any) -> None:
    answer = client.get("/v1/access-snapshot", headers=AUTH).get_json()
    assert answer == {"cursor": 0, "access": [], "next_after_customer": None}


def scraped(client: Any, name: str) -> float | None:
    families = text_string_to_metric_families(client.get("/metrics").get_data(as_text=True))
    return next((s.value for f in families for s in f.samples if s.name == name), None)


def test_a_cursor_older_than_the_pruned_feed_answers_410(container: Container, client: Any, cli: Any) -> None:
    grant(container, "cus_old")
    with transaction(container.new_session) as session:  # the entry is 2 days old
        session.execute(text("UPDATE access_feed SET changed_at = :old"), {"old": datetime.now(UTC) - timedelta(2)})
    grant(container, "cus_new")

    assert scraped(client, "entitlement_sync_access_feed_pruned_total") == 0
    assert cli("feed", "prune", "--older-than-days", "1").exit_code == 0
    # The dashboard's feed growth and prune activity: the feed's cursors, read from SQL at each scrape.
    assert scraped(client, "entitlement_sync_access_feed_changes_total") == 2
    assert scraped(client, "entitlement_sync_access_feed_pruned_total") == 1

    gone = client.get("/v1/access-changes?after=0", headers=AUTH)
    assert gone.status_code == 410 and "snapshot" in gone.get_json()["error"]
    kept = client.get("/v1/access-changes?after=1", headers=AUTH).get_json()["changes"]
    assert [c["customer"] for c in kept] == ["cus_new"]


def test_a_cursor_the_feed_never_handed_out_answers_410(container: Container) -> None:
    grant(container, "cus_a")
    with pytest.raises(FeedCursorGone):
        container.feed.changes(99)


def test_the_feed_takes_the_read_api_token(container: Container, client: Any) -> None:
    assert client.get("/v1/access-changes?after=0").status_code == 401
    assert client.get("/v1/access-snapshot", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/v1/access-changes?after=x", headers=AUTH).status_code == 400


def test_a_long_poll_returns_the_change_committed_while_it_waits(container: Container) -> None:
    start = container.feed.changes(0).next_cursor
    polled: list[Any] = []
    poller = threading.Thread(target=lambda: polled.append(container.feed.changes(start, 10, wait=20)))
    poller.start()
    assert eventually(lambda: container.feed.waiting == 1)  # the grant below must wake it, not be there already
    grant(container, "cus_w")
    poller.join(timeout=30)

    assert [c.customer for c in polled[0].changes] == ["cus_w"]


def test_a_long_poll_with_nothing_new_returns_empty_at_the_end_of_the_wait(container: Container) -> None:
    page = container.feed.changes(0, 10, wait=0.3)
    assert page.changes == [] and page.next_cursor == 0


# --- PostgreSQL: concurrent writers --------------------------------------------------------------------


@pytest.fixture
def commit_delays() -> Iterator[None]:
    """Sleep a random moment just before COMMIT in sessions that ask for it (after the feed numbered its
    changes), so that transactions finish in an order unrelated to their ids."""

    def pause(session: Session) -> None:
        if session.info.get("pause_before_commit"):
            time.sleep(random.uniform(0, 0.01))

    event.listen(Session, "before_commit", pause)
    yield
    event.remove(Session, "before_commit", pause)


def write_randomly(container: Container, customers: list[str], rounds: int, seed: int) -> None:
    """Grant or deny a random key of a random customer; the ids of the history rows are taken early (a flush)
    and the commit comes a random while later."""
    chooser = random.Random(seed)
    for _ in range(rounds):
        customer, key = chooser.choice(customers), chooser.choice(["api_access", "sso"])
        with transaction(container.new_session) as session:
            session.info["pause_before_commit"] = True
            row = store.overrides.add_override(
                session,
                customer_id=customer,
                lookup_key=key,
                kind=chooser.choice(["grant", "deny"]),
                expires_at=LATER,
                created_by="t",
                reason="t",
                now=datetime.now(UTC),
            )
            container.access_policy.recompute(session, customer, f"override:{row.id}")
            session.flush()
            time.sleep(chooser.uniform(0, 0.01))
            # revoke it again sometimes, so keys flip back and forth
            if chooser.random() < 0.5:
                row.revoked_at = datetime.now(UTC)
                container.access_policy.recompute(session, customer, f"override:{row.id}:revoked")


@on_postgres
def test_followers_of_concurrent_out_of_order_writers_end_with_exactly_the_table(
    container: Container, settings: Settings, broker: Any, commit_delays: None
) -> None:
    customers = [f"cus_{n:02d}" for n in range(12)]
    early = Follower(container.feed)
    busy = bootstrap(settings, broker=broker, threads=8)  # a connection for each writer
    writers = [threading.Thread(target=write_randomly, args=(busy, customers, 60, seed)) for seed in range(6)]
    for writer in writers:
        writer.start()
    time.sleep(0.2)
    late = Follower(container.feed, page=3)  # joins mid-run from a paged snapshot
    while any(writer.is_alive() for writer in writers):
        early.poll(wait=0.2)
        late.poll()
    busy.close()
    early.catch_up()
    late.catch_up()

    with container.new_session() as session:
        published = session.execute(
            select(AccessFeedEntry.cursor, AccessFeedEntry.change_id).order_by(AccessFeedEntry.cursor)
        ).all()
    assert [cursor for cursor, _ in published] == list(range(1, len(published) + 1))  # no gap, no duplicate
    ids = [change_id for _, change_id in published]
    assert any(later < earlier for earlier, later in itertools.pairwise(ids))  # commits overtook each other
    assert early.copy == table(container)
    assert late.copy == table(container)


@on_postgres
def test_the_listener_reconnects_after_its_connection_is_killed(container: Container) -> None:
    start = container.feed.changes(0).next_cursor
    container.feed.changes(start, 10, wait=0.1)  # starts the listener
    listener = container.feed._wakeups
    deadline = time.monotonic() + 10
    while not getattr(listener, "connected", False) and time.monotonic() < deadline:
        time.sleep(0.05)
    with container.engine.begin() as connection:
        killed = connection.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'entitlement-sync-feed-listener' AND datname = current_database()"
            )
        ).all()
    assert killed

    polled: list[Any] = []
    poller = threading.Thread(target=lambda: polled.append(container.feed.changes(start, 10, wait=20)))
    poller.start()
    assert eventually(lambda: container.feed.waiting == 1)
    grant(container, "cus_after_restart")
    poller.join(timeout=30)

    assert [c.customer for c in polled[0].changes] == ["cus_after_restart"]
    deadline = time.monotonic() + 10
    while not getattr(listener, "connected", False) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert getattr(listener, "connected", False)


def test_a_long_poll_beyond_the_waiting_slots_is_answered_at_once(container: Container) -> None:
    """The test container has 2 threads, so 1 waiting slot: a second waiter must not hold a thread too."""
    start = container.feed.changes(0).next_cursor
    polled: list[Any] = []
    first = threading.Thread(target=lambda: polled.append(container.feed.changes(start, 10, wait=20)))
    refused = REGISTRY.get_sample_value("entitlement_sync_access_feed_long_polls_refused_total") or 0.0
    first.start()
    assert eventually(lambda: container.feed.waiting == 1)
    waiting = REGISTRY.get_sample_value("entitlement_sync_access_feed_long_polls")
    assert waiting is not None and waiting >= 1  # the gauge is this process's: other tests' polls have ended

    second = container.feed.changes(start, 10, wait=20)

    assert second.changes == [] and first.is_alive()
    assert REGISTRY.get_sample_value("entitlement_sync_access_feed_long_polls_refused_total") == refused + 1
    grant(container, "cus_release")
    first.join(timeout=30)
    assert [c.customer for c in polled[0].changes] == ["cus_release"]
    assert REGISTRY.get_sample_value("entitlement_sync_access_feed_long_polls") == waiting - 1


def test_the_sweeps_review_publishes_what_the_clock_changed(
    settings: Settings, broker: Any, container: Container
) -> None:
    """A path without a use case of its own around it (the sweep's review) publishes too: the hook is per commit."""
    now = [datetime.now(UTC)]
    clocked = bootstrap(settings, broker=broker, clock=lambda: now[0])
    record = clocked.overrides.grant("cus_t", "api_access", now[0] + timedelta(hours=1), "trial", "tester")
    now[0] += timedelta(hours=2)

    assert clocked.access_policy.review_due() == 1
    clocked.close()

    changes = [(c.change, c.cause) for c in container.feed.changes(0).changes]
    assert changes == [("granted", f"override:{record.id}"), ("revoked", f"override:{record.id}:expired")]


def _feed_and_flips(container: Container) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    with container.new_session() as session:
        feed = session.execute(
            select(
                AccessFeedEntry.cursor,
                AccessFeedEntry.change_id,
                AccessFeedEntry.customer_id,
                AccessFeedEntry.change,
                AccessFeedEntry.features,
                AccessFeedEntry.cause,
            ).order_by(AccessFeedEntry.cursor)
        ).all()
        flips = session.execute(
            text(
                "SELECT id, customer_id, change, cause FROM effective_access_changes"
                " WHERE change IN ('granted', 'revoked') ORDER BY id"
            )
        ).all()
    return [tuple(row) for row in feed], [tuple(row) for row in flips]


def test_the_workers_writes_number_their_flips_in_order_with_their_history_ids(
    container: Container, fake_stripe: Any
) -> None:
    """The worker's write numbers its flips into the feed itself on PostgreSQL (the hook at commit elsewhere):
    one entry per flip, cursors without gaps, each naming its history row, its features and its event."""
    from entitlement_sync.events import event_from_payload
    from tests.fakes import summary_signal

    fake_stripe.set_entitlements("cus_a", [("feat_api", "api_access")])
    fake_stripe.set_entitlements("cus_b", [("feat_api", "api_access"), ("feat_rep", "reports")])
    events = []
    for customer in ("cus_a", "cus_b", "cus_a"):
        if len(events) == 2:
            fake_stripe.set_entitlements("cus_a", [])  # the third event: cus_a loses it
        payload = summary_signal(customer, [])
        container.receiver.accept_event(event_from_payload(payload))
        container.syncer.process_event(payload["id"])
        events.append(payload["id"])
    container.syncer.sync_customer("cus_b", cause="after")  # nothing changes: nothing published

    feed, flips = _feed_and_flips(container)
    assert [(cursor, customer, change, features, cause) for cursor, _, customer, change, features, cause in feed] == [
        (1, "cus_a", "granted", ["feat_api"], events[0]),
        (2, "cus_b", "granted", ["feat_api"], events[1]),
        (3, "cus_b", "granted", ["feat_rep"], events[1]),
        (4, "cus_a", "revoked", [], events[2]),
    ]
    assert [row[1] for row in feed] == [change_id for change_id, *_ in flips]
    assert container.feed.bounds()[0] == 4
