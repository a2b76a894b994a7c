"""`entitlement-sync events …`: see the inbox, replay events, recover the ones Stripe could not deliver."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click

from ..bootstrap import Container
from ..events import HANDLED_TYPES
from ..inbox import EventDetail, EventSummary, ReplayReport
from ..models import EventStatus
from ..store.inbox import EventFilter
from ._common import (
    Since,
    dry_run_option,
    json_option,
    note,
    print_json,
    progress_bar,
    table,
    when,
    with_container,
)

STATUSES = [*(status.value for status in EventStatus), "stuck"]


@click.group()
def events() -> None:
    """The inbox of Stripe events: list, show, replay, recover."""


@events.command("list")
@click.option("--status", type=click.Choice(STATUSES), help="`stuck`: unfinished past the timeout (the sweep's pick).")
@click.option("--type", "event_type", help="An event type, e.g. customer.subscription.updated.")
@click.option("--customer", "customer_id", help="A customer id (cus_…).")
@click.option("--since", type=Since(), help="Received since: 2h, 3d, or an ISO date/time.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@json_option
@with_container
def list_events(
    container: Container,
    status: str | None,
    event_type: str | None,
    customer_id: str | None,
    since: datetime | None,
    limit: int,
    as_json: bool,
) -> None:
    """List inbox events, newest first."""
    rows = container.inbox.list_events(EventFilter(status, event_type, customer_id, since, limit))
    if as_json:
        print_json({"events": [_event_json(row) for row in rows]})
        return
    table(
        f"{len(rows)} event(s)",
        ["id", "type", "customer", "status", "attempts", "received", "last error"],
        [
            (
                r.id,
                r.type,
                r.customer_id,
                r.status,
                r.attempts,
                when(r.received_at),
                _first_line(r.last_error),
            )
            for r in rows
        ],
    )


@events.command("show")
@click.argument("event_id")
@json_option
@with_container
def show_event(container: Container, event_id: str, as_json: bool) -> None:
    """One event: its payload, status, and every processing attempt with its time and error."""
    detail = container.inbox.show_event(event_id)
    if detail is None:
        note(f"no event {event_id} in the inbox (see `events recover`)")
        raise SystemExit(1)
    if as_json:
        print_json(
            {
                "event": {**_event_json(detail.event), "processed_at": detail.processed_at},
                "payload": detail.payload,
                "attempts": detail.attempts,
            }
        )
        return
    _print_event(detail)


def _print_event(detail: EventDetail) -> None:
    e = detail.event
    table(
        f"event {e.id}",
        ["field", "value"],
        [
            ("type", e.type),
            ("customer", e.customer_id),
            ("status", e.status),
            ("attempts", e.attempts),
            ("created (Stripe)", when(datetime.fromtimestamp(e.created, UTC))),
            ("received", when(e.received_at)),
            ("status changed", when(e.status_changed_at)),
            ("processed", when(detail.processed_at)),
            ("last error", e.last_error),
        ],
    )
    table(
        "attempts",
        ["#", "started", "finished", "outcome", "error"],
        [(n, when(a.started_at), when(a.finished_at), a.outcome, a.error) for n, a in enumerate(detail.attempts, 1)],
    )
    print_json(detail.payload)


@events.command("replay")
@click.argument("event_ids", nargs=-1)
@click.option("--failed", is_flag=True, help="Replay every failed event (narrow with --since, --type).")
@click.option("--since", type=Since(), help="With --failed: received since 2h, 3d, or an ISO date/time.")
@click.option("--type", "event_type", help="With --failed: only this event type.")
@click.option("--limit", type=click.IntRange(1), help="With --failed: at most this many (oldest event id first).")
@click.option("--wait", is_flag=True, help="Wait for the outcome of each replayed event.")
@click.option("--timeout", default=120.0, show_default=True, type=float, help="Seconds --wait waits at most.")
@dry_run_option
@json_option
@with_container
def replay_events(
    container: Container,
    event_ids: tuple[str, ...],
    failed: bool,
    since: datetime | None,
    event_type: str | None,
    limit: int | None,
    wait: bool,
    timeout: float,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Put events back through processing (a replay of a processed event is harmless)."""
    if bool(event_ids) == failed:
        raise click.UsageError("give event ids, or --failed (not both)")
    if (since or event_type or limit) and not failed:
        raise click.UsageError("--since, --type and --limit go with --failed")
    if failed:
        report = container.inbox.replay_failed(since, event_type, limit=limit, dry_run=dry_run)
    else:
        report = container.inbox.replay(list(event_ids), dry_run=dry_run)
    outcomes = container.inbox.wait_for(report.queued + report.pending, timeout) if wait and not dry_run else None
    document = _replay_document(report, outcomes, dry_run)
    if as_json:
        print_json(document)
    else:
        _print_replay(document, outcomes)
    not_found = any(reason.startswith("not in the inbox") for reason in report.skipped.values())
    unsuccessful = any(row.status not in (EventStatus.PROCESSED, EventStatus.SUPERSEDED) for row in outcomes or [])
    if not_found or unsuccessful:
        raise SystemExit(1)


def _replay_document(report: ReplayReport, outcomes: list[EventSummary] | None, dry_run: bool) -> dict[str, Any]:
    return {
        "dry_run": dry_run,
        "queued": len(report.queued),
        "event_ids": report.queued,
        "pending": report.pending,
        "skipped": report.skipped,
        "outcomes": [_event_json(row) for row in outcomes] if outcomes is not None else None,
    }


def _print_replay(document: dict[str, Any], outcomes: list[EventSummary] | None) -> None:
    verb = "would queue" if document["dry_run"] else "queued"
    click.echo(f"{verb} {document['queued']} event(s) for processing")
    if document["pending"]:
        click.echo(f"{len(document['pending'])} reopened, but the broker is down: the sweep will queue them")
    for event_id, reason in document["skipped"].items():
        click.echo(f"skipped {event_id}: {reason}")
    if outcomes is not None:
        table(
            "outcomes",
            ["id", "status", "attempts", "last error"],
            [(r.id, r.status, r.attempts, _first_line(r.last_error)) for r in outcomes],
        )


@events.command("recover")
@click.option("--since", type=Since(), required=True, help="How far back: 2h, 3d, or an ISO date/time (≤ 30 days).")
@click.option("--undelivered", is_flag=True, help="Only events Stripe failed to deliver (delivery_success=false).")
@dry_run_option
@json_option
@with_container
def recover_events(container: Container, since: datetime, undelivered: bool, dry_run: bool, as_json: bool) -> None:
    """Fetch the handled events the inbox lacks from Stripe's Events API; store and process them."""
    with progress_bar("events", enabled=not as_json) as advance:
        report = container.backfiller.recover(
            since,
            undelivered=undelivered,
            dry_run=dry_run,
            progress=advance,
            warn=lambda text: note(f"warning: {text}"),
        )
    if as_json:
        print_json(report)
        return
    stored = "would store and process" if dry_run else "stored and queued"
    click.echo(
        f"types: {len(HANDLED_TYPES)} handled types; since {when(since)} UTC"
        + (" (undelivered only)" if undelivered else "")
    )
    click.echo(
        f"seen {report.seen}, already in inbox {report.already_in_inbox}, {stored} {report.stored}, "
        f"{'would ignore' if dry_run else 'ignored'} {report.ignored}, invalid {report.invalid}, "
        f"in {report.pages} page(s)"
    )


def _event_json(row: EventSummary) -> dict[str, Any]:
    return {
        "id": row.id,
        "type": row.type,
        "customer": row.customer_id,
        "status": row.status,
        "attempts": row.attempts,
        "created": row.created,
        "received_at": row.received_at,
        "status_changed_at": row.status_changed_at,
        "last_error": row.last_error,
    }


def _first_line(text: str | None) -> str:
    return (text or "").split("\n")[0][:100]
