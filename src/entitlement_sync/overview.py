"""Use case for the ops console's first page: how the service is doing over the last hour, from SQL.

Throughput, backlog, failures, freshness and the Stripe budget, read from the inbox so that every process
tells the same story as `/metrics` and the `events` commands.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from . import store
from .db import SessionFactory
from .inbox import EventSummary, summary_of
from .models import UNFINISHED
from .ports import Clock, StuckRule

WINDOW = timedelta(hours=1)


@dataclass(frozen=True)
class Minute:
    start: datetime
    received: int
    processed: int
    attempts: int


@dataclass(frozen=True)
class Freshness:
    """Seconds from an event's arrival (and from Stripe's `created`) to its change applied, over the window."""

    samples: int
    arrival_p50: float | None
    arrival_p99: float | None
    stripe_p50: float | None
    stripe_p99: float | None
    last_processed_at: datetime | None


@dataclass(frozen=True)
class StripeBudget:
    per_minute: int  # what pacing allows (0: unpaced)
    attempts_last_minute: int  # each attempt asks Stripe at least once (more when a list pages)
    peak_minute: int
    rate_limited: int  # attempts answered 429 over the window

    @property
    def peak_share(self) -> float | None:
        return None if not self.per_minute else self.peak_minute / self.per_minute


@dataclass(frozen=True)
class OverviewReport:
    now: datetime
    by_status: dict[str, int]
    stuck: int
    oldest_unfinished_age: float | None  # seconds
    failed_in_window: int
    freshness: Freshness
    budget: StripeBudget
    minutes: list[Minute]
    recent_failures: list[EventSummary] = field(default_factory=list)

    @property
    def received(self) -> int:
        return sum(minute.received for minute in self.minutes)

    @property
    def processed(self) -> int:
        return sum(minute.processed for minute in self.minutes)

    @property
    def backlog(self) -> int:
        return sum(self.by_status.get(status, 0) for status in UNFINISHED)


def percentile(values: list[float], share: float) -> float | None:
    """The nearest-rank percentile (share in 0..1); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


class Overview:
    def __init__(self, new_session: SessionFactory, clock: Clock, stuck: StuckRule, stripe_rate: float) -> None:
        self._new_session = new_session
        self._clock = clock
        self._stuck = stuck
        self._stripe_rate = stripe_rate

    def last_hour(self) -> OverviewReport:
        now = self._clock()
        since = now - WINDOW
        with self._new_session() as session:
            oldest = store.inbox.oldest_unfinished_received_at(session)
            minutes = self._minutes(session, since)
            return OverviewReport(
                now=now,
                by_status=store.inbox.count_by_status(session),
                stuck=store.inbox.count_stuck(session, now, self._stuck),
                oldest_unfinished_age=None if oldest is None else max(0.0, (now - oldest).total_seconds()),
                failed_in_window=store.inbox_activity.failed_since(session, since),
                freshness=self._freshness(session, since),
                budget=self._budget(minutes, store.inbox_activity.rate_limited_attempts(session, since)),
                minutes=minutes,
                recent_failures=[summary_of(row) for row in store.inbox_activity.recent_failures(session)],
            )

    def _minutes(self, session: Session, since: datetime) -> list[Minute]:
        received = store.inbox_activity.received_per_minute(session, since)
        processed = store.inbox_activity.processed_per_minute(session, since)
        attempts = store.inbox_activity.attempts_per_minute(session, since)
        first = since.replace(second=0, microsecond=0) + timedelta(minutes=1)
        starts = [first + timedelta(minutes=n) for n in range(int(WINDOW.total_seconds() // 60))]
        return [Minute(m, received.get(m, 0), processed.get(m, 0), attempts.get(m, 0)) for m in starts]

    def _freshness(self, session: Session, since: datetime) -> Freshness:
        times = store.inbox_activity.processing_times(session, since)
        from_arrival = [(processed - received).total_seconds() for _, received, processed in times]
        from_stripe = [processed.timestamp() - created for created, _, processed in times]
        return Freshness(
            samples=len(times),
            arrival_p50=percentile(from_arrival, 0.5),
            arrival_p99=percentile(from_arrival, 0.99),
            stripe_p50=percentile(from_stripe, 0.5),
            stripe_p99=percentile(from_stripe, 0.99),
            last_processed_at=store.inbox_activity.last_processed_at(session),
        )

    def _budget(self, minutes: list[Minute], rate_limited: int) -> StripeBudget:
        return StripeBudget(
            per_minute=int(self._stripe_rate * 60),
            attempts_last_minute=minutes[-1].attempts if minutes else 0,
            peak_minute=max((minute.attempts for minute in minutes), default=0),
            rate_limited=rate_limited,
        )
