"""Use case: delete finished inbox events (and their attempts) past a retention window.

Stripe keeps events for 30 days and `events recover` tells a known event from a new one by the inbox: an
event pruned inside that window would be recovered again as new. So the window is at least 30 days plus a
margin. Unfinished events are never touched; failed ones wait for a person and are kept unless asked.
The access history (`access_changes`) is the audit log and is never pruned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from . import store
from .db import SessionFactory, transaction
from .logs import get_logger
from .models import EventStatus
from .ports import Clock

log = get_logger(__name__)

STRIPE_EVENTS_RETENTION = timedelta(days=30)
MARGIN = timedelta(days=5)  # clock skew, a recover run started late, a weekend
MINIMUM_WINDOW = STRIPE_EVENTS_RETENTION + MARGIN
DAILY = timedelta(days=1)
PERIODIC_RUN_NAME = "inbox-prune"


class WindowTooShort(ValueError):
    """The retention window would delete events that Stripe can still send or that recover could fetch."""


def check_window(older_than: timedelta) -> None:
    if older_than < MINIMUM_WINDOW:
        raise WindowTooShort(
            f"a retention window of {older_than.days} day(s) is shorter than {MINIMUM_WINDOW.days} days "
            f"(Stripe keeps events {STRIPE_EVENTS_RETENTION.days} days, plus a {MARGIN.days}-day margin)"
        )


# Named, not derived ("not unfinished"): a status added later (as `waiting` was) is kept until someone
# decides it is final. Unfinished and waiting events are never pruned, however old.
FINAL = (EventStatus.PROCESSED, EventStatus.SUPERSEDED, EventStatus.IGNORED)


def prunable_statuses(include_failed: bool) -> list[str]:
    """The final statuses; failed (which needs a person) only on request."""
    return [*FINAL, *([EventStatus.FAILED] if include_failed else [])]


@dataclass
class PruneReport:
    cutoff: datetime
    dry_run: bool
    include_failed: bool
    events: int = 0  # with --dry-run: would be deleted
    attempts: int = 0
    by_status: dict[str, int] = field(default_factory=dict)


class Pruner:
    def __init__(self, new_session: SessionFactory, clock: Clock, batch_size: int = 1000) -> None:
        self._new_session = new_session
        self._clock = clock
        self._batch_size = batch_size

    def prune(self, older_than: timedelta, *, dry_run: bool = False, include_failed: bool = False) -> PruneReport:
        """Raises WindowTooShort before touching anything when the window is under MINIMUM_WINDOW."""
        check_window(older_than)
        statuses = prunable_statuses(include_failed)
        report = PruneReport(self._clock() - older_than, dry_run, include_failed)
        if dry_run:
            with self._new_session() as session:
                report.by_status, report.attempts = store.retention.count_prunable(session, statuses, report.cutoff)
            report.events = sum(report.by_status.values())
            return report
        # One short transaction per batch: locks are held briefly, and an interrupted prune keeps its progress.
        while True:
            with transaction(self._new_session) as session:
                by_status, attempts = store.retention.delete_prunable_batch(
                    session, statuses, report.cutoff, self._batch_size
                )
            if not by_status:
                break
            report.attempts += attempts
            for status, count in by_status.items():
                report.by_status[status] = report.by_status.get(status, 0) + count
                report.events += count
        log.info("inbox.pruned", events=report.events, attempts=report.attempts, cutoff=report.cutoff.isoformat())
        return report

    def prune_if_due(self, retention_days: int) -> PruneReport | None:
        """The workers' daily prune: runs in whichever process claims today's run first, None elsewhere."""
        with transaction(self._new_session) as session:
            due = store.retention.claim_periodic_run(session, PERIODIC_RUN_NAME, DAILY, self._clock())
        return self.prune(timedelta(days=retention_days)) if due else None
