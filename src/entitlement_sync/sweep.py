"""Use case: hand unfinished events to a worker again. Nothing stored is ever left behind.

Covers an event stored while the broker was down (or while the receiver's breaker was open), a job lost
with Redis (it keeps nothing on disk), a worker killed mid-job, and an event waiting for Stripe whose pause is
over (a Stripe incident longer than the queue's retries). It also marks `superseded` the failed or waiting
events a later applied fetch has covered. One sweep runs at a time across every worker process and host (a
PostgreSQL advisory lock); a duplicate job would still be absorbed by processing, but a thousand of them per
process per round is load for nothing.
"""

from __future__ import annotations

from . import store
from .db import SessionFactory, transaction
from .errors import QueueUnavailable
from .logs import get_logger
from .models import CLAIMABLE, EventStatus
from .ports import Clock, JobQueue, NoTelemetry, StuckRule, Telemetry

log = get_logger(__name__)


class Sweeper:
    def __init__(
        self,
        new_session: SessionFactory,
        queue: JobQueue,
        clock: Clock,
        stuck: StuckRule,
        telemetry: Telemetry | None = None,
    ) -> None:
        self._new_session = new_session
        self._telemetry = telemetry or NoTelemetry()
        self._queue = queue
        self._clock = clock
        self._stuck = stuck

    def requeue_unfinished(self) -> int:
        """Enqueue every event never enqueued, stuck or due; returns how many went back on the queue (0 when
        another process is sweeping: the lock's transaction stays open, idle, until this sweep is done)."""
        with transaction(self._new_session) as locked:
            if not store.locks.try_transaction_lock(locked, store.locks.SWEEP):
                log.debug("sweep.skipped", reason="another process is sweeping")
                return 0
            return self._requeue()

    def _requeue(self) -> int:
        with transaction(self._new_session) as session:
            superseded = store.inbox.supersede_synced(session, self._clock())
        if superseded:
            log.info("sweep.superseded", count=superseded)
        with transaction(self._new_session) as session:
            event_ids = store.inbox.event_ids_to_requeue(session, self._clock(), self._stuck)
        requeued = 0
        for event_id in event_ids:
            try:
                self._queue.enqueue_event(event_id)
            except QueueUnavailable as error:
                log.warning("sweep.queue_unavailable", pending=len(event_ids) - requeued, error=str(error))
                self._telemetry.enqueue_failed("sweep")
                break
            with transaction(self._new_session) as session:
                store.inbox.set_status(session, event_id, EventStatus.QUEUED, self._clock(), only_from=CLAIMABLE)
            requeued += 1
        if requeued:
            log.info("sweep.requeued", count=requeued)
        return requeued
