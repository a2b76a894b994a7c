"""What the composition root returns (`bootstrap.bootstrap`): every part, and what the worker processes switch
on over them (the sweep, the upkeep, the metrics' exposition)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import dramatiq
from sqlalchemy import Engine

from . import store
from .access import AccessReader
from .backfill import Backfiller
from .catalog import Catalog
from .customers import CustomerLookup
from .db import SessionFactory, transaction
from .deliver import Deliverer
from .deliveries import Deliveries
from .drift import CatalogDrift
from .effective import AccessPolicy
from .explain import Explainer
from .feed import AccessFeed
from .history import AccessHistory
from .inbox import Inbox
from .logs import get_logger
from .overrides import Overrides
from .overview import Overview
from .ports import Telemetry
from .prune import Pruner
from .receive import Receiver
from .reconcile import Reconciler
from .settings import Settings
from .stripe_gateway import StripeGateway
from .sweep import Sweeper
from .sync import Syncer
from .tasks import DramatiqQueue, SweepMiddleware, UpkeepMiddleware, worker_metrics_middleware
from .telemetry import multiprocess_mode

log = get_logger(__name__)

# How often each worker process folds the event counts and checks whether today's prune has run.
UPKEEP_INTERVAL_SECONDS = 300


@dataclass(repr=False)
class Container:
    settings: Settings
    engine: Engine
    new_session: SessionFactory
    broker: dramatiq.Broker
    queue: DramatiqQueue
    receiver: Receiver
    syncer: Syncer
    sweeper: Sweeper
    reader: AccessReader
    # The ops side (the `events`, `sync`, `features` and `access` commands).
    gateway: StripeGateway
    inbox: Inbox
    history: AccessHistory
    # The ops console's pages (web/console).
    overview: Overview
    customers: CustomerLookup
    backfiller: Backfiller
    reconciler: Reconciler
    catalog: Catalog
    pruner: Pruner
    # Effective access: the policy, the operator's grants and denials, and the answers that say why.
    access_policy: AccessPolicy
    overrides: Overrides
    explainer: Explainer
    drift: CatalogDrift
    telemetry: Telemetry
    # Access changes published to other services: the feed, its long polls, the snapshot.
    feed: AccessFeed
    # Outbound access webhooks: the workers drain the outbox; `deliveries list|replay` look into it.
    deliverer: Deliverer
    deliveries: Deliveries

    def __repr__(self) -> str:
        # The parts hold clients built from secrets; Settings' own repr is the redacted one.
        return f"Container(settings={self.settings!r})"

    def enable_sweep(self) -> None:
        """Make every worker of this broker sweep unfinished events at start-up and periodically (the same
        thread applies what the clock changes in effective access: expired grants, ended graces), and do the
        upkeep: fold the event counts, prune the inbox once a day when INBOX_RETENTION_DAYS is set, and the feed
        and delivered access webhooks past ACCESS_FEED_RETENTION_DAYS."""
        self.broker.add_middleware(SweepMiddleware(self.sweep_once, self.settings.sweep_interval_seconds))
        self.broker.add_middleware(UpkeepMiddleware(self.upkeep, UPKEEP_INTERVAL_SECONDS, name="upkeep"))

    def sweep_once(self) -> None:
        self.sweeper.requeue_unfinished()
        try:
            self.access_policy.review_due()
        except Exception:  # the next round tries again; the requeue above must not wait on this
            log.exception("sweep.access_review_failed")
        try:  # deliveries whose job was lost (a broker outage, a killed worker) are asked for again
            self.deliverer.kick_due()
        except Exception:
            log.exception("sweep.webhook_kick_failed")

    def upkeep(self) -> None:
        with transaction(self.new_session) as session:
            store.counts.fold_event_counts(session)
        if self.settings.inbox_retention_days is not None:
            self.pruner.prune_if_due(self.settings.inbox_retention_days)
        days = self.settings.access_feed_retention_days
        if days is not None and self.feed.prune_if_due(days) is not None:
            self.deliveries.prune_delivered(timedelta(days=days))

    def enable_worker_metrics(self) -> bool:
        """Expose the worker processes' metrics through Dramatiq's Prometheus middleware (its own port).

        Only when this process writes metrics to files (`entitlement-sync worker` prepares that): otherwise
        the exposition server would serve an empty directory, so say so instead.
        """
        if not multiprocess_mode():
            return False
        self.broker.add_middleware(worker_metrics_middleware())
        return True

    def close(self) -> None:
        self.feed.close()
        self.reader.close()
        self.receiver.close()
        self.engine.dispose()
