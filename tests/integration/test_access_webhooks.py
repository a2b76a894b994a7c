"""Outbound access webhooks on a real database and a real HTTP subscriber: the outbox is written in the change's
transaction (and rolled back with it), deliveries are signed, retried, in order per customer, never lost while
the subscriber is down, and visible and replayable from the CLI."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import dramatiq
import pytest
from sqlalchemy import func, select, update

from entitlement_sync.bootstrap import Container, bootstrap
from entitlement_sync.db import transaction
from entitlement_sync.deliver import Deliverer
from entitlement_sync.events import event_from_payload
from entitlement_sync.models import AccessFeedEntry, AccessOverride, EffectiveAccessChange, EventStatus, WebhookDelivery
from entitlement_sync.outbound import SignedPoster
from entitlement_sync.settings import Settings
from entitlement_sync.settings_parsers import parse_webhook_subscribers
from entitlement_sync.tasks import build_redis_broker, build_stub_broker
from entitlement_sync.testing import active_entitlement, summary_event
from tests.conftest import TEST_DATABASE_URL, TEST_REDIS_URL
from tests.fakes import RecordingDeliveryQueue, summary_signal
from tests.integration.conftest import Cli, round_trips_of
from tests.webhook_subscriber import Subscriber

# A second subscriber, where nothing listens (the discard port): drained only where a test says so.
ELSEWHERE_URL = "http://127.0.0.1:9/elsewhere"
ELSEWHERE = f"{ELSEWHERE_URL}|whsec_c2Vjb25kLXN1YnNjcmliZXI="
IN_A_WEEK = timedelta(days=7)


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    """The service's clock, moved by the test (kept within minutes of the real one: the subscriber checks the
    signature's timestamp against its own)."""
    return Clock()


@pytest.fixture
def subscriber() -> Iterator[Subscriber]:
    with Subscriber() as subscriber:
        yield subscriber


def hooked_settings(settings: Settings, *entries: str) -> Settings:
    return replace(
        settings,
        access_webhooks=parse_webhook_subscribers(",".join(entries)),
        access_webhook_timeout_seconds=2.0,
        redis_namespace=f"{settings.redis_namespace}-hooks",
    )


@pytest.fixture
def hooked(container: Container, settings: Settings, subscriber: Subscriber, clock: Clock) -> Iterator[Container]:
    """A container whose ACCESS_WEBHOOK_URLS names the test subscriber (and one more), on a broker of its own:
    the `container` fixture's broker already carries a deliverer without subscribers."""
    configured = hooked_settings(settings, subscriber.entry, ELSEWHERE)
    broker = build_redis_broker(configured) if TEST_REDIS_URL else build_stub_broker()
    built = bootstrap(configured, broker=broker, clock=clock)
    yield built
    broker.flush_all()
    broker.close()
    built.close()


@pytest.fixture
def cli(hooked: Container) -> Cli:
    """`entitlement-sync …` over the container with subscribers."""
    return Cli(hooked)


@pytest.fixture
def hooked_worker(hooked: Container) -> Iterator[dramatiq.Worker]:
    worker = dramatiq.Worker(hooked.broker, worker_timeout=50, worker_threads=2)
    worker.start()
    yield worker
    worker.stop()


def deliverer(
    container: Container, clock: Clock, queue: RecordingDeliveryQueue, timeout: float = 2.0, **retry: timedelta
) -> Deliverer:
    """The use case with the test's clock and a queue that only records kicks: the test drains by hand."""
    rule = replace(container.settings.webhook_retry, **retry) if retry else container.settings.webhook_retry
    poster = SignedPoster(timeout)
    return Deliverer(container.new_session, container.settings.access_webhooks, poster, queue, clock, rule)


def grant(container: Container, customer: str, key: str = "api_access") -> int:
    return container.overrides.grant(customer, key, datetime.now(UTC) + IN_A_WEEK, "test", "ops@example").id


def revoke(container: Container, override_id: int) -> None:
    container.overrides.revoke(override_id, "ops@example")


def deliveries(container: Container, subscriber: str | None = None) -> list[WebhookDelivery]:
    with container.new_session() as session:
        statement = select(WebhookDelivery).order_by(WebhookDelivery.id)
        if subscriber:
            statement = statement.where(WebhookDelivery.subscriber == subscriber)
        return list(session.scalars(statement))


def wait_for(condition, what: str, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# --- the outbox ------------------------------------------------------------------------------------------------


def test_a_grant_writes_one_delivery_per_subscriber_with_the_change(hooked, subscriber):
    grant(hooked, "cus_1")
    with hooked.new_session() as session:
        change = session.scalars(select(EffectiveAccessChange)).one()
    rows = deliveries(hooked)
    assert [row.subscriber for row in rows] == [subscriber.url, ELSEWHERE_URL]
    assert {(row.change_id, row.message_id, row.status, row.type) for row in rows} == {
        (change.id, f"msg_{change.id}", "pending", "access.granted")
    }
    assert rows[0].body == rows[1].body
    assert json.loads(rows[0].body) == {
        "type": "access.granted",
        "timestamp": change.changed_at.isoformat(),
        "data": {
            "customer": "cus_1",
            "lookup_key": "api_access",
            "feature": None,  # a grant made here names no Stripe feature
            "features": [],
            "change": "granted",
            "at": change.changed_at.isoformat(),
            "cause": change.cause,
        },
    }


def test_a_rolled_back_recompute_leaves_neither_the_change_nor_its_deliveries(hooked):
    with pytest.raises(RuntimeError), transaction(hooked.new_session) as session:
        now = datetime.now(UTC)
        override = AccessOverride(
            customer_id="cus_1", lookup_key="sso", kind="grant", expires_at=now + IN_A_WEEK,
            created_by="test", reason="test", created_at=now,
        )  # fmt: skip
        session.add(override)
        session.flush()
        changes = hooked.access_policy.recompute(session, "cus_1", f"override:{override.id}")
        assert [change.change for change in changes] == ["granted"]
        session.flush()
        assert session.scalar(select(func.count()).select_from(WebhookDelivery)) == 2  # written, in this transaction
        raise RuntimeError("the use case failed after the recompute")
    with hooked.new_session() as session:
        assert session.scalar(select(func.count()).select_from(EffectiveAccessChange)) == 0
        assert session.scalar(select(func.count()).select_from(WebhookDelivery)) == 0


def test_reason_only_updates_are_not_published(hooked):
    hooked.overrides.deny("cus_1", "api_access", None, "abuse", "ops@example")  # nothing to take: same answer
    with hooked.new_session() as session:
        assert session.scalars(select(EffectiveAccessChange.change)).all() == ["updated"]
    assert deliveries(hooked) == []


def test_without_subscribers_nothing_is_written(container):
    grant(container, "cus_1")
    assert deliveries(container) == []


# --- delivery ----------------------------------------------------------------------------------------------------


def test_a_worker_delivers_each_change_signed_after_its_commit(hooked, hooked_worker, subscriber):
    override = grant(hooked, "cus_1")
    revoke(hooked, override)
    delivered = lambda: [row.status for row in deliveries(hooked, subscriber.url)] == ["delivered"] * 2  # noqa: E731
    wait_for(delivered, "both changes to be delivered")
    assert [p["type"] for p in subscriber.payloads()] == ["access.granted", "access.revoked"]
    assert subscriber.rejected_signatures == 0  # the library's own Webhook.verify accepted each
    rows = deliveries(hooked, subscriber.url)
    assert {(row.status, row.attempts, row.last_status) for row in rows} == {("delivered", 1, 204)}
    assert subscriber.granted() == set()


def test_a_subscriber_that_fails_gets_every_change_in_order_once_it_recovers(hooked, subscriber, clock):
    kicks = RecordingDeliveryQueue()
    drain = deliverer(hooked, clock, kicks).drain
    subscriber.down()
    first = grant(hooked, "cus_a")
    grant(hooked, "cus_b")
    revoke(hooked, first)
    grant(hooked, "cus_a", "sso")

    report = drain(subscriber.url)
    assert (report.delivered, report.stopped, subscriber.requests) == (0, "retrying", 1)  # the head only
    assert kicks.kicks == [(subscriber.url, 1.0)]  # tried again after the first pause
    head, *behind = deliveries(hooked, subscriber.url)
    assert (head.status, head.attempts, head.last_status, head.last_error) == ("pending", 1, 503, "HTTP 503:")
    assert {(row.status, row.attempts) for row in behind} == {("pending", 0)}

    assert drain(subscriber.url).stopped == "waiting"  # before its pause ends, nothing is posted
    clock.advance(1)
    assert drain(subscriber.url).stopped == "retrying"
    assert kicks.kicks[-1] == (subscriber.url, 2.0)  # the pause doubles
    assert subscriber.requests == 2

    subscriber.up()
    clock.advance(2)
    assert drain(subscriber.url).delivered == 4
    assert [(p["data"]["customer"], p["data"]["lookup_key"], p["data"]["change"]) for p in subscriber.payloads()] == [
        ("cus_a", "api_access", "granted"),
        ("cus_b", "api_access", "granted"),
        ("cus_a", "api_access", "revoked"),
        ("cus_a", "sso", "granted"),
    ]
    assert subscriber.out_of_order == []
    assert subscriber.granted() == {("cus_b", "api_access"), ("cus_a", "sso")}
    assert [row.attempts for row in deliveries(hooked, subscriber.url)] == [3, 1, 1, 1]


def test_nothing_is_lost_while_the_subscriber_is_down_past_its_retries(hooked, subscriber, clock, cli):
    kicks = RecordingDeliveryQueue()
    drain = deliverer(hooked, clock, kicks, give_up_after=timedelta(seconds=100)).drain
    subscriber.down()
    grant(hooked, "cus_0")
    assert drain(subscriber.url).stopped == "retrying"
    clock.advance(120)  # past the first message's window (from when it was written)
    for n in range(1, 5):
        grant(hooked, f"cus_{n}")
    report = drain(subscriber.url)
    assert (report.gave_up, report.stopped) == (1, "retrying")  # the next one has its own window, and waits
    rows = deliveries(hooked, subscriber.url)
    assert [(row.status, row.attempts) for row in rows] == [("failed", 2), ("pending", 1), *[("pending", 0)] * 3]
    assert subscriber.messages == []

    subscriber.up()
    clock.advance(1)
    assert drain(subscriber.url).delivered == 4
    listed = cli.json("deliveries", "list", "--status", "failed", "--subscriber", subscriber.url)["deliveries"]
    assert [row["customer_id"] for row in listed] == ["cus_0"]
    replay = cli.json("deliveries", "replay", "--failed", "--subscriber", subscriber.url)
    assert replay["reopened"] == [listed[0]["id"]]
    assert drain(subscriber.url).delivered == 1
    assert subscriber.granted() == {(f"cus_{n}", "api_access") for n in range(5)}


def test_an_unreachable_or_hanging_subscriber_is_retried_with_the_reason_recorded(hooked, subscriber, clock):
    kicks = RecordingDeliveryQueue()
    use_case = deliverer(hooked, clock, kicks, timeout=0.3)
    grant(hooked, "cus_1")
    subscriber.on_request = lambda: time.sleep(1)  # hangs past the timeout
    assert use_case.drain(subscriber.url).stopped == "retrying"
    assert use_case.drain(ELSEWHERE_URL).stopped == "retrying"  # nothing listens there
    hanging, unreachable = (deliveries(hooked, url)[0] for url in (subscriber.url, ELSEWHERE_URL))
    assert (hanging.status, hanging.last_status, hanging.last_error) == ("pending", None, "timed out after 0.3 s")
    assert (unreachable.status, unreachable.last_status) == ("pending", None)
    assert (unreachable.last_error or "").startswith("ConnectionError")


def test_a_second_drain_leaves_while_another_posts_the_head(hooked, subscriber, clock):
    if not TEST_DATABASE_URL:
        pytest.skip("row locks: PostgreSQL (SQLite deployments are one process; drains take turns in it)")
    one, two = deliverer(hooked, clock, RecordingDeliveryQueue()), deliverer(hooked, clock, RecordingDeliveryQueue())
    grant(hooked, "cus_1")
    posting, release = threading.Event(), threading.Event()
    subscriber.on_request = lambda: (posting.set(), release.wait(10))
    first = threading.Thread(target=one.drain, args=(subscriber.url,))
    first.start()
    assert posting.wait(10)
    assert two.drain(subscriber.url).stopped == "busy"  # as another process would: the head is locked
    release.set()
    first.join(10)
    assert len(subscriber.messages) == 1 and subscriber.requests == 1


def test_a_kick_that_finds_a_drain_under_way_is_not_lost(hooked, subscriber, clock):
    use_case = deliverer(hooked, clock, RecordingDeliveryQueue())
    grant(hooked, "cus_1")
    posting, release = threading.Event(), threading.Event()
    subscriber.on_request = lambda: (posting.set(), release.wait(10))
    first = threading.Thread(target=use_case.drain, args=(subscriber.url,))
    first.start()
    assert posting.wait(10)
    grant(hooked, "cus_2")  # committed while the first message is being posted
    assert use_case.drain(subscriber.url).stopped == "busy"  # its kick: this process is draining already
    subscriber.on_request = None
    release.set()
    first.join(10)
    assert [p["data"]["customer"] for p in subscriber.payloads()] == ["cus_1", "cus_2"]


def test_the_sweep_kicks_subscribers_whose_head_is_due_and_not_those_backing_off(hooked, subscriber, clock):
    kicks = RecordingDeliveryQueue()
    use_case = deliverer(hooked, clock, kicks)
    grant(hooked, "cus_1")
    assert use_case.kick_due() == 2  # both subscribers have a due head
    assert {url for url, _ in kicks.kicks} == {subscriber.url, ELSEWHERE_URL}
    subscriber.down()
    use_case.drain(subscriber.url)
    kicks.kicks.clear()
    use_case.kick_due()
    assert subscriber.url not in {url for url, _ in kicks.kicks}  # backing off: its delayed job will come
    clock.advance(1)
    use_case.kick_due()
    assert (subscriber.url, 0.0) in kicks.kicks


# --- the CLI and the metrics -------------------------------------------------------------------------------------


def test_deliveries_list_and_replay_by_id_and_since(hooked, subscriber, clock, cli: Cli):
    kicks = RecordingDeliveryQueue()
    grant(hooked, "cus_1")
    grant(hooked, "cus_2")
    deliverer(hooked, clock, kicks).drain(subscriber.url)
    listed = cli.json("deliveries", "list", "--subscriber", subscriber.url)["deliveries"]
    assert [(row["customer_id"], row["status"], row["attempts"]) for row in listed] == [
        ("cus_2", "delivered", 1),
        ("cus_1", "delivered", 1),
    ]
    assert cli.json("deliveries", "list", "--status", "pending", "--limit", "1")["deliveries"][0]["subscriber"] == (
        ELSEWHERE_URL
    )
    table = cli("deliveries", "list")
    assert table.exit_code == 0 and "4 deliveries" in table.stdout and "cus_1" in table.stdout

    again = cli.json("deliveries", "replay", "--ids", f"{listed[1]['id']},999999", exit_code=1)
    assert again["reopened"] == [listed[1]["id"]] and again["skipped"] == {"999999": "not in the outbox"}
    kicks.kicks.clear()
    assert deliverer(hooked, clock, kicks).drain(subscriber.url).delivered == 1
    assert subscriber.redeliveries == 1  # the same webhook-id: the subscriber dropped it as a duplicate

    since = cli.json("deliveries", "replay", "--since", "1h", "--subscriber", subscriber.url, "--dry-run")
    assert since["dry_run"] and sorted(since["reopened"]) == sorted(row["id"] for row in listed)
    assert {row.status for row in deliveries(hooked, subscriber.url)} == {"delivered"}  # a dry run changes nothing
    usage = cli("deliveries", "replay")
    assert usage.exit_code == 2 and "--ids, --failed or --since" in usage.stderr


def scraped(container: Container) -> dict[tuple[str, ...], float]:
    """The web's /metrics (in tests, the workers' counters too) as {(sample name, subscriber[, outcome]): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    from entitlement_sync.web import create_app

    text = create_app(container).test_client().get("/metrics").get_data(as_text=True)
    families = text_string_to_metric_families(text)
    keys = ("subscriber", "outcome")
    return {(s.name, *(s.labels[k] for k in keys if k in s.labels)): s.value for f in families for s in f.samples}


def test_metrics_show_each_subscribers_pending_deliveries_and_how_long_its_oldest_has_waited(hooked, subscriber):
    pending, age = (
        "entitlement_sync_access_webhooks_pending",
        "entitlement_sync_access_webhooks_oldest_pending_age_seconds",
    )
    delivered = ("entitlement_sync_access_webhook_deliveries_total", subscriber.url, "delivered")
    waits = ("entitlement_sync_access_webhook_delivery_wait_seconds_count", subscriber.url)
    before = scraped(hooked)
    assert before[(pending, subscriber.url)] == before[(pending, ELSEWHERE_URL)] == 0  # configured: 0, not absent

    grant(hooked, "cus_1")
    grant(hooked, "cus_2")
    # Written two days ago, replayed an hour ago: it has waited an hour (since its replay), not two days.
    now = datetime.now(UTC)
    with transaction(hooked.new_session) as session:
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.subscriber == ELSEWHERE_URL)
            .values(created_at=now - timedelta(days=2), pending_since=now - timedelta(hours=1))
        )
    waiting = scraped(hooked)
    assert waiting[(pending, subscriber.url)] == waiting[(pending, ELSEWHERE_URL)] == 2
    assert 3600 <= waiting[(age, ELSEWHERE_URL)] < 86400
    assert waiting[(age, subscriber.url)] < 3600

    assert hooked.deliverer.drain(subscriber.url).delivered == 2
    after = scraped(hooked)
    assert after[(pending, subscriber.url)] == after[(age, subscriber.url)] == 0
    assert after[(pending, ELSEWHERE_URL)] == 2  # another subscriber's backlog is its own
    assert after[delivered] - before[delivered] == 2  # counted per subscriber, from 0 (declared at bootstrap)
    assert after.get(waits, 0) - before.get(waits, 0) == 2


def test_the_daily_upkeep_prunes_old_feed_entries_and_delivered_webhooks_but_keeps_the_rest(hooked, subscriber, clock):
    drain = deliverer(hooked, clock, RecordingDeliveryQueue()).drain
    grant(hooked, "cus_old")
    assert drain(subscriber.url).delivered == 1
    long_ago = datetime.now(UTC) - timedelta(days=40)
    with transaction(hooked.new_session) as session:  # 40 days pass for what is there now
        session.execute(update(AccessFeedEntry).values(changed_at=long_ago))
        session.execute(update(WebhookDelivery).values(created_at=long_ago, delivered_at=long_ago))
    grant(hooked, "cus_new")
    assert drain(subscriber.url).delivered == 1

    hooked.upkeep()  # ACCESS_FEED_RETENTION_DAYS: 30 by default

    assert [change.customer for change in hooked.feed.changes(1).changes] == ["cus_new"]
    assert hooked.feed.bounds() == (2, 1)  # a consumer at cursor 0 must re-snapshot
    kept = {(row.customer_id, row.subscriber, row.status) for row in deliveries(hooked)}
    assert kept == {
        ("cus_old", ELSEWHERE_URL, "pending"),  # never delivered: kept however old
        ("cus_new", subscriber.url, "delivered"),
        ("cus_new", ELSEWHERE_URL, "pending"),
    }
    assert hooked.feed.prune_if_due(30) is None  # done for today, in whichever process ran it


def test_the_feed_is_pruned_in_slices_and_can_be_kept_for_ever(hooked):
    for n in range(5):
        grant(hooked, f"cus_{n}")
    with transaction(hooked.new_session) as session:
        session.execute(update(AccessFeedEntry).values(changed_at=datetime.now(UTC) - timedelta(days=2)))
    assert hooked.feed.prune(timedelta(days=1), slice_size=2) == 5
    assert hooked.feed.bounds() == (5, 5)
    assert Settings.from_env({"ACCESS_FEED_RETENTION_DAYS": "off"}).access_feed_retention_days is None
    assert Settings.from_env({"ACCESS_FEED_RETENTION_DAYS": "7"}).access_feed_retention_days == 7
    with pytest.raises(ValueError, match="ACCESS_FEED_RETENTION_DAYS=0"):
        Settings.from_env({"ACCESS_FEED_RETENTION_DAYS": "0"})


@pytest.mark.skipif(not TEST_DATABASE_URL, reason="the COMMIT goes with a statement on PostgreSQL only")
@pytest.mark.parametrize("complete", [True, False], ids=["payload", "fetch"])
def test_a_synced_grant_commits_with_its_deliveries(hooked, fake_stripe, tmp_path, complete):
    """A sync's write takes the transaction's COMMIT along only when nothing is written after it. With subscribers,
    its changes' deliveries are: the COMMIT waits for them, and they commit with the change."""
    fake_stripe.set_entitlements("cus_1", [("feat_api", "api_access")])
    items = [active_entitlement("feat_api", "api_access", entitlement_id="ent_1")]
    payload = summary_event("cus_1", items) if complete else summary_signal("cus_1", [])
    hooked.receiver.accept_event(event_from_payload(payload))
    with round_trips_of(hooked.engine, tmp_path) as round_trips:
        outcome = hooked.syncer.process_event(payload["id"], customer_id="cus_1")
    assert outcome.status == EventStatus.PROCESSED
    trips = round_trips()
    assert trips[-1] == "COMMIT", "\n".join(trips)
    assert trips[-2].startswith("INSERT INTO webhook_deliveries"), "\n".join(trips)
    assert {row.type for row in deliveries(hooked)} == {"access.granted"}
    assert len(deliveries(hooked)) == 2
