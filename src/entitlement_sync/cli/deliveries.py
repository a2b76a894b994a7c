"""`entitlement-sync deliveries …`: the outbound access webhooks: see them, send them again."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click

from ..bootstrap import Container
from ..deliveries import DeliverySummary, ReplayReport
from ..models import DeliveryStatus
from ..store.deliveries import DeliveryFilter
from ._common import Since, dry_run_option, json_option, note, print_json, table, when, with_container

STATUSES = [status.value for status in DeliveryStatus]


@click.group()
def deliveries() -> None:
    """Outbound access webhooks (ACCESS_WEBHOOK_URLS): list, replay."""


@deliveries.command("list")
@click.option("--status", type=click.Choice(STATUSES), help="pending (not yet 2xx), delivered or failed.")
@click.option("--subscriber", help="A subscriber's URL, as in ACCESS_WEBHOOK_URLS.")
@click.option("--customer", "customer_id", help="A customer id (cus_…).")
@click.option("--since", type=Since(), help="Written since: 2h, 3d, or an ISO date/time.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@json_option
@with_container
def list_deliveries(
    container: Container,
    status: str | None,
    subscriber: str | None,
    customer_id: str | None,
    since: datetime | None,
    limit: int,
    as_json: bool,
) -> None:
    """List deliveries, newest first, with their attempts, last answer and next try."""
    rows = container.deliveries.find(DeliveryFilter(status, subscriber, customer_id, since, limit))
    if as_json:
        print_json({"deliveries": rows})
        return
    table(
        f"{len(rows)} deliveries",
        ["id", "subscriber", "type", "customer", "key", "status", "attempts", "written", "next try", "last answer"],
        [
            (
                r.id,
                r.subscriber,
                r.type,
                r.customer_id,
                r.lookup_key,
                r.status,
                r.attempts,
                when(r.created_at),
                when(r.next_attempt_at),
                _last_answer(r),
            )
            for r in rows
        ],
    )


@deliveries.command("replay")
@click.option("--ids", help="Comma-separated delivery ids (see `deliveries list`).")
@click.option("--failed", is_flag=True, help="Every failed delivery (narrow with --since, --subscriber).")
@click.option("--since", type=Since(), help="Every delivered or failed one written since: 2h, 3d, an ISO date/time.")
@click.option("--subscriber", help="Only this subscriber's deliveries (with --failed or --since).")
@dry_run_option
@json_option
@with_container
def replay_deliveries(
    container: Container,
    ids: str | None,
    failed: bool,
    since: datetime | None,
    subscriber: str | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Send deliveries again, with their own webhook-id (subscribers that dedupe see a redelivery).

    They keep their place in the outbox, so they go before anything pending; one older than a change the
    subscriber already has arrives after it (its `timestamp` says so).
    """
    delivery_ids = _parse_ids(ids)
    if delivery_ids and (failed or since or subscriber):
        raise click.UsageError("give --ids, or --failed/--since (narrowed with --subscriber), not both")
    if not (delivery_ids or failed or since):
        raise click.UsageError("give --ids, --failed or --since")
    report = container.deliveries.replay(
        delivery_ids, failed=failed, since=since, subscriber=subscriber, dry_run=dry_run
    )
    document = _replay_document(report, dry_run)
    if as_json:
        print_json(document)
    else:
        verb = "would send again" if dry_run else "sending again"
        click.echo(f"{verb} {len(report.reopened)} deliveries")
        for delivery_id, reason in sorted(report.skipped.items()):
            click.echo(f"skipped {delivery_id}: {reason}")
        for url in report.unkicked:
            note(f"the broker is down: the workers' sweep will deliver to {url}")
    if any(reason == "not in the outbox" for reason in report.skipped.values()):
        raise SystemExit(1)


def _parse_ids(raw: str | None) -> list[int]:
    try:
        return [int(part) for part in (raw or "").split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"{raw!r}: delivery ids are numbers, e.g. --ids 12,13", param_hint="--ids") from None


def _replay_document(report: ReplayReport, dry_run: bool) -> dict[str, Any]:
    return {
        "dry_run": dry_run,
        "reopened": report.reopened,
        "skipped": {str(key): reason for key, reason in sorted(report.skipped.items())},
        "unkicked": report.unkicked,
    }


def _last_answer(row: DeliverySummary) -> str:
    if not row.attempts:
        return ""
    return (row.last_error or str(row.last_status)).split("\n")[0][:80]
