"""`entitlement-sync doctor`: check every setting and dependency, name each problem and its fix."""

from __future__ import annotations

import click

from ..bootstrap import Container
from ..doctor import DoctorReport, Level
from ..settings import Settings
from ._common import json_option, print_json, table

MARKS = {Level.OK: "ok", Level.WARNING: "warning", Level.PROBLEM: "PROBLEM", Level.SKIPPED: "skipped"}


@click.command()
@json_option
@click.pass_context
def doctor(ctx: click.Context, as_json: bool) -> None:
    """Check settings, Stripe key and account, database, broker. Exit 0 when all is well, 1 otherwise."""
    from ..bootstrap import build_doctor

    given = ctx.find_root().obj
    try:
        settings = None if isinstance(given, Container) else Settings.from_env()
    except ValueError as error:  # a setting that is not a number: from_env names it
        click.echo(f"error: {error}", err=True)
        raise SystemExit(1) from None
    container = given if isinstance(given, Container) else None
    report = build_doctor(settings, container).examine()
    if as_json:
        print_json({"ok": report.ok, "findings": report.findings})
    else:
        _print(report)
    raise SystemExit(0 if report.ok else 1)


def _print(report: DoctorReport) -> None:
    rows = [(f.check, MARKS[f.level], f.detail, f.fix or "") for f in report.findings]
    table("entitlement-sync doctor", ["check", "status", "detail", "fix"], rows)
    problems = len(report.problems)
    click.echo("all is well" if report.ok else f"{problems} problem(s): see the fix column")
