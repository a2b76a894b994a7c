"""Use case: recover from Stripe's Events API the events the inbox never got (we were down, the endpoint was
disabled).

Recovered events take the webhook's path (`Receiver.accept_event`): stored exactly as Stripe's API returned them,
then processed by the workers like a delivered event.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from . import store
from .db import SessionFactory
from .errors import InvalidWebhook
from .events import HANDLED_TYPES, event_from_payload
from .logs import get_logger
from .pacing import with_retries
from .ports import Clock, EventPage, EventSource, Retry
from .receive import Receiver, Verdict

log = get_logger(__name__)

# Stripe's Events API keeps the last 30 days; older events are gone for good.
EVENTS_RETENTION = timedelta(days=30)


@dataclass
class BackfillReport:
    since: datetime
    undelivered: bool
    dry_run: bool
    seen: int = 0
    pages: int = 0
    already_in_inbox: int = 0
    stored: int = 0  # with --dry-run: would be stored and processed
    ignored: int = 0  # stored as ignored (other mode, no customer); with --dry-run: would be
    invalid: int = 0
    warnings: list[str] = field(default_factory=list)


def retention_warning(since: datetime, now: datetime) -> str | None:
    oldest = now - EVENTS_RETENTION
    if since >= oldest:
        return None
    return (
        f"--since reaches {since:%Y-%m-%d %H:%M} UTC, but Stripe keeps events for 30 days only: nothing "
        f"before {oldest:%Y-%m-%d %H:%M} UTC can be recovered. Run `entitlement-sync sync all` to reconcile "
        "every customer from Stripe's current state instead."
    )


class Backfiller:
    """Streams the Events API a page at a time: memory stays flat however long the window, each page's request
    is paced by the source (the shared Stripe budget), and a page that meets a 429/5xx is retried on its own
    rather than the listing restarting from page 1."""

    def __init__(
        self,
        new_session: SessionFactory,
        source: EventSource,
        receiver: Receiver,
        clock: Clock,
        retry: Retry[Any] = with_retries,
    ) -> None:
        self._new_session = new_session
        self._source = source
        self._receiver = receiver
        self._clock = clock
        self._retry = retry

    def recover(
        self,
        since: datetime,
        *,
        undelivered: bool = False,
        dry_run: bool = False,
        progress: Callable[[int, int], None] | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> BackfillReport:
        report = BackfillReport(since=since, undelivered=undelivered, dry_run=dry_run)
        warning = retention_warning(since, self._clock())
        if warning:  # said before any call to Stripe, so an operator can stop a run that cannot help
            report.warnings.append(warning)
            if warn:
                warn(warning)
        types, created_gte, cursor = sorted(HANDLED_TYPES), int(since.timestamp()), None
        while True:
            fetch = partial(self._source.list_events_page, types, created_gte, undelivered, cursor)
            page: EventPage = self._retry(fetch)
            self._take_page(page.events, report)
            if progress:
                progress(report.seen, report.seen)
            if not page.has_more or page.last_id is None:
                break
            cursor = page.last_id
        log.info(
            "events.recovered",
            seen=report.seen,
            pages=report.pages,
            already=report.already_in_inbox,
            stored=report.stored,
            ignored=report.ignored,
            dry_run=dry_run,
        )
        return report

    def _take_page(self, payloads: list[dict[str, Any]], report: BackfillReport) -> None:
        report.pages += 1
        report.seen += len(payloads)
        with self._new_session() as session:
            known = store.inbox.known_event_ids(session, [str(payload.get("id", "")) for payload in payloads])
        # Stripe lists newest first; within a page, store oldest first, as they would have arrived. (Order does
        # not matter for access: every event is a signal to fetch the customer's current state.)
        for payload in reversed(payloads):
            self._take(payload, known, report)

    def _take(self, payload: dict[str, Any], known: set[str], report: BackfillReport) -> None:
        if payload.get("id") in known:
            report.already_in_inbox += 1
            return
        try:
            inbound = event_from_payload(payload)
        except InvalidWebhook as error:
            log.warning("events.recover_invalid", event_id=payload.get("id"), error=str(error))
            report.invalid += 1
            return
        if report.dry_run:  # the same verdict the real run's `accept_event` reaches, without storing
            if self._receiver.reason_to_ignore(inbound):
                report.ignored += 1
            else:
                report.stored += 1
            return
        acceptance = self._receiver.accept_event(inbound)
        if acceptance.status == Verdict.ACCEPTED:
            report.stored += 1
        elif acceptance.status == Verdict.IGNORED:
            report.ignored += 1
        else:  # a webhook delivered it meanwhile
            report.already_in_inbox += 1
