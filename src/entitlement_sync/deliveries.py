"""Use cases for operators: see the outbound access webhooks and send some again (`entitlement-sync deliveries
list|replay`). The workers' side, draining them, is deliver.py."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from . import store
from .db import SessionFactory, transaction
from .errors import QueueUnavailable
from .models import DeliveryStatus, WebhookDelivery
from .ports import Clock, DeliveryQueue
from .store.deliveries import DeliveryFilter


@dataclass(frozen=True)
class DeliverySummary:
    id: int
    subscriber: str
    message_id: str
    customer_id: str
    lookup_key: str
    type: str
    status: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    delivered_at: datetime | None


@dataclass
class ReplayReport:
    reopened: list[int] = field(default_factory=list)
    skipped: dict[int, str] = field(default_factory=dict)
    unkicked: list[str] = field(default_factory=list)  # subscribers the broker could not be asked about now


class Deliveries:
    def __init__(
        self, new_session: SessionFactory, subscriber_urls: Sequence[str], queue: DeliveryQueue, clock: Clock
    ) -> None:
        self._new_session = new_session
        self._subscribers = set(subscriber_urls)
        self._queue = queue
        self._clock = clock

    def find(self, where: DeliveryFilter) -> list[DeliverySummary]:
        with self._new_session() as session:
            return [summary(row) for row in store.deliveries.find(session, where)]

    def replay(
        self,
        ids: Sequence[int] = (),
        *,
        failed: bool = False,
        since: datetime | None = None,
        subscriber: str | None = None,
        dry_run: bool = False,
    ) -> ReplayReport:
        """Send deliveries again: the given ids, or every failed one, or every one (delivered or failed) written
        since a moment; narrowed to one subscriber. They keep their ids (and `webhook-id`), so they go first."""
        report = ReplayReport()
        with transaction(self._new_session) as session:
            rows = self._replayable(session, ids, failed, since, subscriber)
            for row in rows:
                reason = self._refusal(row)
                if reason:
                    report.skipped[row.id] = reason
                else:
                    report.reopened.append(row.id)
            report.skipped.update({n: "not in the outbox" for n in set(ids) - {row.id for row in rows}})
            if report.reopened and not dry_run:
                store.deliveries.reopen(session, report.reopened, self._clock())
        if not dry_run:
            kicked = sorted({row.subscriber for row in rows if row.id in report.reopened})
            report.unkicked = [url for url in kicked if not self._kick(url)]
        return report

    def prune_delivered(self, older_than: timedelta, batch_size: int = 1000) -> int:
        """Delete deliveries delivered longer ago than this, a short transaction per batch. Failed ones wait
        for a person (`deliveries replay --failed`) and are kept."""
        cutoff, deleted = self._clock() - older_than, 0
        while True:
            with transaction(self._new_session) as session:
                batch = store.deliveries.delete_delivered_batch(session, cutoff, batch_size)
            deleted += batch
            if batch < batch_size:
                return deleted

    def _replayable(
        self, session: Session, ids: Sequence[int], failed: bool, since: datetime | None, subscriber: str | None
    ) -> list[WebhookDelivery]:
        if ids:
            return store.deliveries.by_ids(session, ids)
        status = DeliveryStatus.FAILED if failed else None
        return store.deliveries.replayable(session, status, since, subscriber)

    def _refusal(self, row: WebhookDelivery) -> str | None:
        if row.status == DeliveryStatus.PENDING:
            return "already pending"
        if row.subscriber not in self._subscribers:
            return "its subscriber is no longer in ACCESS_WEBHOOK_URLS"
        return None

    def _kick(self, subscriber_url: str) -> bool:
        try:
            self._queue.kick(subscriber_url)
            return True
        except QueueUnavailable:  # they are pending: the workers' sweep kicks them
            return False


def summary(row: WebhookDelivery) -> DeliverySummary:
    return DeliverySummary(
        id=row.id,
        subscriber=row.subscriber,
        message_id=row.message_id,
        customer_id=row.customer_id,
        lookup_key=row.lookup_key,
        type=row.type,
        status=row.status,
        attempts=row.attempts,
        created_at=row.created_at,
        next_attempt_at=row.next_attempt_at,
        last_attempt_at=row.last_attempt_at,
        last_status=row.last_status,
        last_error=row.last_error,
        delivered_at=row.delivered_at,
    )
