"""`entitlement-sync sync …`: fetch customers' entitlements from Stripe now and apply them."""

from __future__ import annotations

from typing import Any

import click

from ..bootstrap import Container
from ..reconcile import ReconcileReport
from ..revoke_guard import DEFAULT_MAX_SHARE, RevokeGuard
from ._common import dry_run_option, json_option, note, print_json, progress_bar, table, with_container

# What a shell reports for Ctrl-C: scripts can tell "interrupted, resume me" from "failed".
EXIT_INTERRUPTED = 130
# `sync all` stopped by its revoke guard: not a failure of the run, a question for a person.
EXIT_GUARD_STOPPED = 3


@click.group()
def sync() -> None:
    """Reconcile the access table with Stripe, outside the event path."""


@sync.command("customer")
@click.argument("customer_ids", nargs=-1, required=True)
@dry_run_option
@json_option
@with_container
def sync_customer(container: Container, customer_ids: tuple[str, ...], dry_run: bool, as_json: bool) -> None:
    """Fetch and apply these customers' entitlements now, printing what changed."""
    report = container.reconciler.sync_customers(customer_ids, dry_run=dry_run)
    _finish(report, as_json, changes_of_all=True, customer_ids=customer_ids)


@sync.command("all")
@click.option(
    "--rate",
    default=20.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Stripe requests per second at most, shared through Redis by concurrent runs.",
)
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its checkpoint.")
@click.option(
    "--max-revoke-share",
    default=DEFAULT_MAX_SHARE,
    show_default=True,
    type=click.FloatRange(min=0, max=1),
    help="Stop before applying once more than this share of the customers checked would lose every entitlement.",
)
@click.option("--yes", is_flag=True, help="Apply even past --max-revoke-share (the revocations are expected).")
@dry_run_option
@json_option
@with_container
def sync_all(
    container: Container,
    rate: float,
    resume: bool,
    max_revoke_share: float,
    yes: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Reconcile every customer (local ones and those with subscriptions in Stripe), then report the drift."""
    guard = RevokeGuard(max_share=max_revoke_share, enabled=not yes)
    try:
        with progress_bar("customers", enabled=not as_json) as advance:
            report = container.reconciler.sync_all(
                rate=rate, resume=resume, dry_run=dry_run, guard=guard, progress=advance
            )
    except KeyboardInterrupt:
        note("interrupted: the checkpoint is saved; run `entitlement-sync sync all --resume` to continue")
        raise SystemExit(EXIT_INTERRUPTED) from None
    _finish(report, as_json, changes_of_all=False)


def _explain_guard(guard: RevokeGuard, dry_run: bool) -> None:
    if dry_run:
        verdict = "a real run would stop here" if guard.stopped else "within the limit"
        note(f"revoke guard: {guard.describe()}: {verdict}")
        return
    note(
        f"stopped before applying: {guard.describe()}. Nothing was applied for the customers checked since the "
        "last checkpoint. A wrong STRIPE_API_KEY or a Stripe incident looks like this: run `entitlement-sync "
        "doctor`. If these revocations are expected, run `entitlement-sync sync all --resume --yes`."
    )


def _finish(
    report: ReconcileReport, as_json: bool, *, changes_of_all: bool, customer_ids: tuple[str, ...] = ()
) -> None:
    if as_json:
        print_json(_document(report))
    else:
        _print(report, changes_of_all, customer_ids)
    guard = report.guard
    if guard is not None and (guard.stopped or report.dry_run):
        _explain_guard(guard, report.dry_run)
    if guard is not None and guard.stopped and not report.dry_run:
        raise SystemExit(EXIT_GUARD_STOPPED)
    if report.errors:
        raise SystemExit(1)


def _document(report: ReconcileReport) -> dict[str, Any]:
    return {
        "dry_run": report.dry_run,
        "customers": report.customers,
        "checked": report.checked,
        "granted": report.granted,
        "revoked": report.revoked,
        "errors": report.errors,
        "resumed_after": report.resumed_after,
        "rate": report.rate,
        "shared_pacer": report.shared_pacer,
        "revoke_guard": None if report.guard is None else _guard_document(report.guard),
        "changes": [
            {"customer": c.customer_id, "granted": c.granted, "revoked": c.revoked, "error": c.error}
            for c in report.changes
        ],
    }


def _guard_document(guard: RevokeGuard) -> dict[str, Any]:
    return {
        "max_share": guard.max_share,
        "enforced": guard.enabled,
        "checked": guard.checked,
        "losing_everything": guard.losing_everything,
        "stopped": guard.stopped,
        "stopped_at": guard.stopped_at,
    }


def _print(report: ReconcileReport, changes_of_all: bool, customer_ids: tuple[str, ...]) -> None:
    changed = {change.customer_id: change for change in report.changes}
    shown = list(dict.fromkeys(customer_ids)) if changes_of_all else list(changed)
    rows = []
    for customer_id in shown:
        change = changed.get(customer_id)
        if change is None:
            rows.append((customer_id, "", "", "no change"))
        else:
            rows.append(
                (
                    customer_id,
                    ", ".join(change.granted),
                    ", ".join(change.revoked),
                    (change.error or "").split("\n")[0],
                )
            )
    verb = "would be " if report.dry_run else ""
    if rows:
        title = "changes (dry run: nothing written)" if report.dry_run else "changes applied"
        table(title, ["customer", "granted", "revoked", "note"], rows)
    resumed = f" (resumed after {report.resumed_after})" if report.resumed_after else ""
    click.echo(
        f"checked {report.checked} customer(s){resumed}: {report.granted} grant(s) and "
        f"{report.revoked} revoke(s) {verb}applied, {report.errors} error(s)"
    )
