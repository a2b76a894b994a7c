"""The composition root: builds every part from settings. Nothing happens at import time.

Tests call `bootstrap(settings, broker=StubBroker(), stripe=FakeStripe())` to swap in fakes, and pass `sleep`
and `monotonic` so that the ops retries and the Stripe pacing never wait for real.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from functools import partial

import dramatiq
from sqlalchemy import Engine

from .access import AccessReader
from .backfill import Backfiller
from .breaker import CircuitBreaker
from .catalog import Catalog
from .container import Container as Container  # imported from here by the entry points and tests
from .customers import CustomerLookup
from .db import PoolOptions, create_db_engine, schema_revisions, session_factory
from .deliver import Deliverer
from .deliveries import Deliveries
from .doctor import Doctor
from .drift import CatalogDrift
from .effective import AccessPolicy
from .explain import Explainer
from .feed import AccessFeed, PollingWakeups
from .grouped_writes import GroupedWrites
from .history import AccessHistory
from .inbox import Inbox
from .models import utcnow
from .outbound import SignedPoster
from .outbox import Outbox
from .overrides import Overrides
from .overview import Overview
from .pacing import LazyPacer, build_pacer, with_retries
from .ports import Clock, EntitlementSource, FeedWakeups, Pacer, StuckRule, Telemetry, WaitRule
from .prune import Pruner
from .receive import Receiver
from .reconcile import Reconciler
from .settings import Settings
from .stripe_gateway import StripeGateway
from .stripe_signature import WebhookVerifier
from .sweep import Sweeper
from .sync import Syncer
from .tasks import (
    DramatiqDeliveryQueue,
    DramatiqQueue,
    build_redis_broker,
    declare_deliver_webhooks,
    declare_process_event,
    ping_broker,
)
from .telemetry import PrometheusTelemetry, count_webhook_delivery, declare_webhook_subscribers


def bootstrap(
    settings: Settings | None = None,
    *,
    broker: dramatiq.Broker | None = None,
    stripe: EntitlementSource | None = None,
    clock: Clock = utcnow,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
    threads: int = 2,
    telemetry: Telemetry | None = None,
) -> Container:
    """`threads`: how many threads of this process use the database at once (its pool holds as many)."""
    settings = settings or Settings.from_env()
    telemetry = telemetry or PrometheusTelemetry()
    engine = create_db_engine(settings.database_url, pool_options(settings, threads))
    new_session = session_factory(engine)
    gateway = StripeGateway(
        settings.stripe_api_key,
        settings.stripe_api_base,
        settings.stripe_timeout_seconds,
        telemetry=telemetry,
        client_telemetry=settings.stripe_client_telemetry,
    )
    broker = broker or build_redis_broker(settings)

    budget = settings.stripe_requests_per_second

    def pacer_for(rate: float) -> Pacer:
        """A pacer on the shared log; never above the budget (`sync all --rate` may ask for less)."""
        return build_pacer(
            settings.redis_url,
            f"{settings.redis_namespace}:stripe-budget",
            min(rate, budget) if budget > 0 else rate,
            monotonic,
            sleep,
            settings.redis_timeout_seconds,
            # Without Redis each process keeps a share: the worker processes of a host and one ops command.
            fallback_share=settings.worker_processes + 1,
        )

    retry = partial(with_retries, sleep=sleep)  # the ops use cases retry Stripe's 429/5xx in-process

    # The workers' calls share one budget with `sync all` and `events recover` (the same Redis key), so that
    # together they stay under Stripe's limit instead of burning their retries on 429s.
    # Every request to Stripe takes a moment in that budget: the workers' fetches and their 404 checks, every
    # page and retry, the ops commands' listings, the catalog and `doctor`.
    paced = gateway.paced(LazyPacer(lambda: pacer_for(budget), budget)) if budget > 0 else gateway
    stripe = stripe or paced
    wait = WaitRule(
        first_pause=timedelta(seconds=settings.sweep_interval_seconds),
        max_pause=timedelta(seconds=settings.retry_max_pause_seconds),
        give_up_after=timedelta(seconds=settings.retry_unavailable_for_seconds),
    )
    declare_webhook_subscribers(subscriber.url for subscriber in settings.access_webhooks)
    delivery_queue = DramatiqDeliveryQueue(declare_deliver_webhooks(broker, lambda url: deliverer.drain(url), settings))
    outbox = Outbox(settings.access_webhooks, delivery_queue, CircuitBreaker(settings.broker_breaker_seconds))
    deliverer = Deliverer(
        new_session,
        settings.access_webhooks,
        SignedPoster(settings.access_webhook_timeout_seconds),
        delivery_queue,
        clock,
        settings.webhook_retry,
        on_outcome=count_webhook_delivery,
        monotonic=monotonic,
    )
    # No subscribers, no publisher: the policy then knows that recording a change writes nothing more.
    publish = outbox.publish if settings.access_webhooks else None
    access_policy = AccessPolicy(new_session, settings.policy_rules, clock, publish)
    syncer = Syncer(new_session, stripe, clock, wait, telemetry, access_policy)
    queue = DramatiqQueue(broker, declare_process_event(broker, syncer, settings))
    verifier = WebhookVerifier(settings.webhook_secrets, settings.webhook_tolerance_seconds)
    receiver = Receiver(
        new_session,
        verifier,
        queue,
        clock,
        settings.livemode,
        breaker=CircuitBreaker(settings.broker_breaker_seconds, on_change=telemetry.breaker_changed),
        database_breaker=CircuitBreaker(settings.database_breaker_seconds),
        telemetry=telemetry,
        grouped_writes=GroupedWrites(engine) if engine.dialect.name == "postgresql" else None,
    )
    reader = AccessReader(engine, settings.stale_after, clock)
    explainer = Explainer(new_session, reader, settings.policy_rules, clock)
    overrides = Overrides(new_session, access_policy, clock)
    stuck = StuckRule(
        received_grace=timedelta(seconds=settings.received_grace_seconds),
        stuck_after=timedelta(seconds=settings.stuck_after_seconds),
    )

    return Container(
        settings=settings,
        engine=engine,
        new_session=new_session,
        broker=broker,
        queue=queue,
        receiver=receiver,
        syncer=syncer,
        sweeper=Sweeper(new_session, queue, clock, stuck, telemetry),
        reader=reader,
        gateway=paced,
        inbox=Inbox(new_session, receiver, clock, stuck),
        history=AccessHistory(new_session),
        overview=Overview(new_session, clock, stuck, settings.stripe_requests_per_second),
        # The console's customer page: effective access with its reasons, and the grants made here.
        customers=CustomerLookup(new_session, clock, stuck, explainer, overrides),
        backfiller=Backfiller(new_session, paced, receiver, clock, retry),
        reconciler=Reconciler(new_session, syncer, paced, clock, pacer_for, retry),
        catalog=Catalog(new_session, paced, clock, retry, access_policy),
        access_policy=access_policy,
        overrides=overrides,
        explainer=explainer,
        drift=CatalogDrift(new_session),
        deliverer=deliverer,
        deliveries=Deliveries(new_session, [s.url for s in settings.access_webhooks], delivery_queue, clock),
        pruner=Pruner(new_session, clock),
        telemetry=telemetry,
        # At most half of the threads wait in long polls: the others keep serving reads and probes.
        feed=AccessFeed(
            new_session,
            engine,
            feed_wakeups(settings.database_url),
            clock,
            max_waiting=threads // 2,
            telemetry=telemetry,
        ),
    )


def feed_wakeups(database_url: str) -> FeedWakeups:
    """PostgreSQL: one LISTEN connection, started by the first long poll; SQLite: look again every 0.2 s."""
    if database_url.startswith("postgresql"):
        from .feed_listener import PostgresFeedListener

        return PostgresFeedListener(database_url)
    return PollingWakeups()


def pool_options(settings: Settings, threads: int) -> PoolOptions:
    return PoolOptions(
        threads=threads,
        statement_timeout_seconds=settings.database_statement_timeout_seconds,
        connect_timeout_seconds=settings.database_connect_timeout_seconds,
    )


class _DatabaseProbe:
    """The DatabaseProbe port over an engine: `doctor`'s questions to the database."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def revisions(self) -> tuple[str | None, str]:
        return schema_revisions(self._engine)

    def a_known_customer(self) -> str | None:

        from . import store

        with session_factory(self._engine)() as session:
            return store.access.a_customer_with_access(session)


def build_doctor(settings: Settings | None = None, container: Container | None = None) -> Doctor:
    """The doctor, building each part only when asked: a malformed setting must be reported, not crash it.

    With a container (tests, or a command that has one), its parts are examined instead.
    """
    settings = container.settings if container else (settings or Settings.from_env())

    def gateway() -> StripeGateway:
        if container:
            return container.gateway
        return StripeGateway(
            settings.stripe_api_key,
            settings.stripe_api_base,
            settings.stripe_timeout_seconds,
            client_telemetry=settings.stripe_client_telemetry,
        )

    def database() -> _DatabaseProbe:
        return _DatabaseProbe(container.engine if container else create_db_engine(settings.database_url))

    def ping() -> None:
        ping_broker(container.broker if container else build_redis_broker(settings))

    return Doctor(settings, gateway, database, ping)
