"""Use case: recover from Stripe's Events API the events the inbox never got (we were down, the endpoint was
disabled).

Recovered events take the webhook's path (`Receiver.accept_event`): stored, then processed by the workers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from . import store
from .db import SessionFactory
from .errors import InvalidWebhook
from .events import HANDLED_TYPES, event_from_payload
from .logs import get_logger
from .pacing import with_retries
from .ports import Clock, EventSource, Retry
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
    already_in_inbox: int = 0
    stored: int = 0  # with --dry-run: would be stored
    ignored: int = 0  # stored as ignored (other mode, no customer)
    invalid: int = 0
    stored_ids: list[str] = field(default_factory=list)
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
    ) -> BackfillReport:
        report = BackfillReport(since=since, undelivered=undelivered, dry_run=dry_run)
        warning = retention_warning(since, self._clock())
        if warning:
            report.warnings.append(warning)
        payloads = self._retry(
            lambda: list(self._source.list_events(sorted(HANDLED_TYPES), int(since.timestamp()), undelivered))
        )
        report.seen = len(payloads)
        with self._new_session() as session:
            known = store.inbox.known_event_ids(session, [payload.get("id", "") for payload in payloads])
        # Stripe lists newest first; store oldest first, as they would have arrived.
        for done, payload in enumerate(sorted(payloads, key=lambda item: item.get("created", 0)), start=1):
            self._take(payload, known, report)
            if progress:
                progress(done, len(payloads))
        log.info(
            "events.recovered",
            seen=report.seen,
            already=report.already_in_inbox,
            stored=report.stored,
            ignored=report.ignored,
            dry_run=dry_run,
        )
        return report

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
        if report.dry_run:
            report.stored += 1
            report.stored_ids.append(inbound.id)
            return
        acceptance = self._receiver.accept_event(inbound)
        if acceptance.status == Verdict.ACCEPTED:
            report.stored += 1
            report.stored_ids.append(inbound.id)
        elif acceptance.status == Verdict.IGNORED:
            report.ignored += 1
        else:  # a webhook delivered it meanwhile
            report.already_in_inbox += 1
