"""Dramatiq's one home: the broker (its batch enqueue, which leans on Dramatiq's Redis internals, in
redis_broker.py), the actors (shims over the use cases), and the periodic sweep."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage, Middleware

from .errors import QueueUnavailable
from .logs import get_logger
from .redis_broker import BatchRedisBroker, new_messages
from .redis_client import redis_client
from .settings import Settings
from .sync import Syncer

log = get_logger(__name__)

PROCESS_EVENT = "process_event"
# The job's message option naming the event's customer, as stored: the worker takes the customer's lock with its
# claim in one round trip instead of reading the customer first (`Syncer.process_event`).
CUSTOMER_OPTION = "customer"
DELIVER_WEBHOOKS = "deliver_access_webhooks"


def build_redis_broker(settings: Settings) -> dramatiq.Broker:
    # The client, not the URL: only a pool built with the timeouts applies them (see redis_client.py).
    client = redis_client(
        settings.redis_url,
        socket_timeout=settings.redis_timeout_seconds,
        connect_timeout=settings.redis_connect_timeout_seconds,
    )
    return BatchRedisBroker(
        client=client,
        namespace=settings.redis_namespace,
        middleware=_middleware(),
    )


def build_stub_broker() -> dramatiq.Broker:
    """Dramatiq's in-memory broker, for `entitlement-sync dev` and the embedded test suite."""
    return StubBroker(middleware=_middleware())


def _middleware() -> list[Middleware]:
    from dramatiq.middleware import default_middleware

    return [factory() for factory in default_middleware] + [CurrentMessage()]


def worker_metrics_middleware() -> Middleware:
    """Dramatiq's own Prometheus middleware: message counts and durations, and (forked by the `dramatiq` main
    process) an exposition server for every metric in the workers' multiprocess directory, ours included.
    Imported here, late: the module creates its directory and reads its port when imported."""
    from dramatiq.middleware.prometheus import Prometheus

    return Prometheus()


def worker_metrics_environment(directory: str, host: str, port: int) -> dict[str, str]:
    """The variables Dramatiq's Prometheus middleware reads when imported (in every process `dramatiq` starts)."""
    return {"dramatiq_prom_db": directory, "dramatiq_prom_host": host, "dramatiq_prom_port": str(port)}


def declare_process_event(broker: dramatiq.Broker, syncer: Syncer, settings: Settings) -> dramatiq.Actor[[str], None]:
    if PROCESS_EVENT in broker.actors:  # a second container on one broker (tests) sends through the first
        return broker.get_actor(PROCESS_EVENT)
    max_retries = settings.max_retries
    if not any(isinstance(middleware, CurrentMessage) for middleware in broker.middleware):
        broker.add_middleware(CurrentMessage())  # the actor reads its retry count from it

    def process_event(event_id: str) -> None:
        message = CurrentMessage.get_current_message()
        options = message.options if message is not None else {"retries": max_retries}
        named = options.get(CUSTOMER_OPTION)
        final_attempt = options.get("retries", 0) >= max_retries
        customer_id = named if isinstance(named, str) else None
        syncer.process_event(event_id, final_attempt=final_attempt, customer_id=customer_id)

    declare = dramatiq.actor(
        broker=broker,
        actor_name=PROCESS_EVENT,
        queue_name=settings.queue_name,
        max_retries=max_retries,
        min_backoff=settings.min_backoff_ms,
        max_backoff=settings.max_backoff_ms,
        time_limit=settings.job_time_limit_ms,
    )
    return declare(process_event)


def webhooks_queue(queue_name: str) -> str:
    """Deliveries have a queue of their own: a backlog of events never delays them, nor they the events."""
    return f"{queue_name}-webhooks"


def declare_deliver_webhooks(
    broker: dramatiq.Broker, drain: Callable[[str], object], settings: Settings
) -> dramatiq.Actor[[str], None]:
    if DELIVER_WEBHOOKS in broker.actors:
        return broker.get_actor(DELIVER_WEBHOOKS)

    def deliver_access_webhooks(subscriber_url: str) -> None:
        drain(subscriber_url)

    declare = dramatiq.actor(
        broker=broker,
        actor_name=DELIVER_WEBHOOKS,
        queue_name=webhooks_queue(settings.queue_name),
        # Failed posts are retried through the outbox (its rows, its pauses); these retries are for the
        # database being away mid-drain, and the sweep kicks again after them.
        max_retries=5,
        min_backoff=1_000,
        max_backoff=30_000,
        # A drain hands over after 30 s; one post in flight then may take the timeout twice (connect, read).
        time_limit=int((60 + 2 * settings.access_webhook_timeout_seconds) * 1000),
    )
    return declare(deliver_access_webhooks)


class DramatiqDeliveryQueue:
    """The DeliveryQueue port: sends a drain job for a subscriber, now or after a delay."""

    def __init__(self, actor: dramatiq.Actor[[str], None]) -> None:
        self._actor = actor

    def kick(self, subscriber_url: str, delay_seconds: float = 0) -> None:
        delay = int(delay_seconds * 1000) or None
        try:
            self._actor.send_with_options(args=(subscriber_url,), delay=delay)
        except (redis.RedisError, dramatiq.errors.BrokerError, OSError) as error:
            raise QueueUnavailable(f"{type(error).__name__}: {error}") from error


class DramatiqQueue:
    """The JobQueue port over a Dramatiq actor."""

    def __init__(self, broker: dramatiq.Broker, actor: dramatiq.Actor[[str], None]) -> None:
        self._broker = broker
        self._actor = actor

    def enqueue_event(self, event_id: str) -> None:
        try:
            self._actor.send(event_id)
        except (redis.RedisError, dramatiq.errors.BrokerError, OSError) as error:
            raise QueueUnavailable(f"{type(error).__name__}: {error}") from error

    def enqueue_events(self, event_ids: Sequence[str], customers: Mapping[str, str | None] | None = None) -> None:
        """One round trip for them all on Redis; raises QueueUnavailable if the broker may not have taken them all."""
        try:
            calls = [((event_id,), _naming((customers or {}).get(event_id))) for event_id in event_ids]
            if isinstance(self._broker, BatchRedisBroker):
                # Built with their Redis ids: no copy of each message to add them (RedisBroker.enqueue's way).
                self._broker.enqueue_all(new_messages(self._actor, calls))
                return
            for args, options in calls:
                self._actor.send_with_options(args=args, **options)
        except (redis.RedisError, dramatiq.errors.BrokerError, OSError) as error:
            raise QueueUnavailable(f"{type(error).__name__}: {error}") from error

    def ping(self) -> None:
        ping_broker(self._broker)


def _naming(customer_id: str | None) -> dict[str, Any]:
    # An option, not an argument: a worker of an older release (a rolling deploy) ignores it and looks it up.
    return {} if customer_id is None else {CUSTOMER_OPTION: customer_id}


def ping_broker(broker: dramatiq.Broker) -> None:
    """Raise QueueUnavailable unless the broker's Redis answers (an in-memory broker always does)."""
    client = getattr(broker, "client", None)
    if client is None:
        return
    try:
        client.ping()
    except (redis.RedisError, OSError) as error:
        raise QueueUnavailable(f"{type(error).__name__}: {error}") from error


class SweepMiddleware(Middleware):
    """Runs the sweep (or another periodic job) on worker start-up and then every `interval` seconds, in a
    daemon thread."""

    def __init__(self, sweep: Callable[[], Any], interval_seconds: float, *, name: str = "sweep") -> None:
        self._sweep = sweep
        self._interval = interval_seconds
        self._name = name
        self._stopped = threading.Event()

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        threading.Thread(target=self._run, name=f"entitlement-sync-{self._name}", daemon=True).start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stopped.set()

    def _run(self) -> None:
        while True:
            try:
                self._sweep()
            except Exception:  # the database may be down; the next round tries again
                log.exception(f"{self._name}.failed")
            if self._stopped.wait(self._interval):
                return


class UpkeepMiddleware(SweepMiddleware):
    """The workers' upkeep (folding the event counts, the daily prune), on a thread of its own. A type of its
    own too: Dramatiq warns about two middlewares of one type."""


def start_in_process_worker(broker: dramatiq.Broker, threads: int = 2) -> dramatiq.Worker:
    """A worker inside the current process, for `entitlement-sync dev` and tests."""
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=100)
    worker.start()
    return worker
