"""`entitlement-sync events prune`: delete finished inbox events past a retention window."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import click

from ..bootstrap import Container
from ..prune import MINIMUM_WINDOW, WindowTooShort, check_window
from ._common import dry_run_option, json_option, print_json, when, with_container

_WINDOW = re.compile(r"^(\d+)\s*([dwh])$")
_UNITS = {"h": "hours", "d": "days", "w": "weeks"}


class Window(click.ParamType[timedelta]):
    name = "window"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> timedelta:
        if isinstance(value, timedelta):
            return value
        match = _WINDOW.match(str(value).strip().lower())
        if not match:
            self.fail(f"{value!r}: use days, weeks or hours, like 35d, 6w, 900h", param, ctx)
        window = timedelta(**{_UNITS[match[2]]: int(match[1])})
        try:
            check_window(window)
        except WindowTooShort as error:
            self.fail(str(error), param, ctx)
        return window


@click.command("prune")
@click.option(
    "--older-than",
    type=Window(),
    required=True,
    help=f"Delete finished events received (and created) before this long ago; at least {MINIMUM_WINDOW.days}d.",
)
@click.option("--include-failed", is_flag=True, help="Delete failed events too (by default they wait for a person).")
@dry_run_option
@json_option
@with_container
def prune_events(
    container: Container, older_than: timedelta, include_failed: bool, dry_run: bool, as_json: bool
) -> None:
    """Delete processed and ignored events (and their attempts) older than the window, in batches.

    Never touches unfinished events, nor the access history (`access_changes`, the audit log).
    """
    report = container.pruner.prune(older_than, dry_run=dry_run, include_failed=include_failed)
    if as_json:
        print_json(report)
        return
    verb = "would delete" if dry_run else "deleted"
    statuses = ", ".join(f"{status} {count}" for status, count in sorted(report.by_status.items())) or "none"
    click.echo(f"{verb} {report.events} event(s) ({statuses}) and {report.attempts} attempt(s)")
    click.echo(f"received before {when(report.cutoff)} UTC; failed events {'included' if include_failed else 'kept'}")
