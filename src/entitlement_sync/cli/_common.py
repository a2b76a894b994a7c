"""What every ops command shares: the container, `--json` output, tables, progress bars, `--since` parsing."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import update_wrapper
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from ..bootstrap import Container

json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
dry_run_option = click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")


def container_of(ctx: click.Context) -> Container:
    """The container handed in by a test (`obj=`), or one built from the environment and closed on exit."""
    root = ctx.find_root()
    if not isinstance(root.obj, Container):
        from ..bootstrap import bootstrap
        from ..logs import configure_logging

        # A real run: logs to stderr, warnings and up, so that stdout holds only tables or the JSON document.
        configure_logging(level="WARNING")
        root.obj = bootstrap()
        root.call_on_close(root.obj.close)
    return root.obj


def with_container(command: Callable[..., Any]) -> Callable[..., Any]:
    """Pass the container as the command's first argument."""

    @click.pass_context
    def wrapper(ctx: click.Context, *args: Any, **kwargs: Any) -> Any:
        return command(container_of(ctx), *args, **kwargs)

    return update_wrapper(wrapper, command)


_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str | None, now: datetime | None = None) -> datetime | None:
    """`2h`, `3d`, `30m`, `1w`, or an ISO date/time (UTC unless it says otherwise)."""
    if text is None:
        return None
    now = now or datetime.now(UTC)
    match = _RELATIVE.match(text.strip().lower())
    if match:
        return now - timedelta(**{_UNITS[match[2]]: int(match[1])})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError as error:
        raise click.BadParameter(f"{text!r}: use 2h, 3d, 30m, 1w or an ISO date like 2026-11-20T08:00") from error
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Since(click.ParamType[datetime | None]):
    name = "since"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime | None:
        if isinstance(value, datetime) or value is None:
            return value
        try:
            return parse_since(value)
        except click.BadParameter as error:
            self.fail(error.message, param, ctx)


def jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: jsonable(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set):
        return [jsonable(item) for item in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def print_json(document: Any) -> None:
    click.echo(json.dumps(jsonable(document), indent=2, sort_keys=True))


def stdout() -> Console:
    return Console(file=sys.stdout, soft_wrap=False, width=max(Console(file=sys.stdout).width, 120))


def note(message: str) -> None:
    """A line for the operator, on stderr, so stdout stays clean for pipes."""
    click.echo(message, err=True)


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    # Cells are Text, never markup: an error message or a Stripe string that contains "[red]" prints as is.
    grid = Table(title=None if title is None else Text(title), show_lines=False)
    for column in columns:
        grid.add_column(Text(column), overflow="fold")
    for row in rows:
        grid.add_row(*(Text("" if cell is None else str(cell)) for cell in row))
    stdout().print(grid)


def when(moment: datetime | None) -> str:
    if moment is None:
        return ""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


@contextmanager
def progress_bar(label: str, enabled: bool) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr; a no-op with `--json`, so stdout carries nothing but the document."""
    if not enabled:
        yield lambda done, total: None
        return
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(file=sys.stderr), transient=False) as progress:
        task = progress.add_task(label, total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield advance
