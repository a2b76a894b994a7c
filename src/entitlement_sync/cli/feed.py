"""`entitlement-sync feed prune|status`: the access feed that internal services follow."""

from __future__ import annotations

from datetime import timedelta

import click

from ..bootstrap import Container
from ._common import json_option, print_json, with_container


@click.group()
def feed() -> None:
    """The access feed (GET /v1/access-changes)."""


@feed.command("prune")
@click.option("--older-than-days", type=click.IntRange(min=1), required=True, help="Delete entries older than this.")
@with_container
def prune_feed(container: Container, older_than_days: int) -> None:
    """Delete feed entries older than the window (the history in effective_access_changes stays).

    A consumer whose cursor is older then gets 410 and takes a new snapshot.
    """
    deleted = container.feed.prune(timedelta(days=older_than_days))
    click.echo(f"deleted {deleted} feed entr{'y' if deleted == 1 else 'ies'}")


@feed.command("status")
@json_option
@with_container
def feed_status(container: Container, as_json: bool) -> None:
    """The last cursor handed out and the oldest one a consumer may still resume from."""
    last, pruned = container.feed.bounds()
    if as_json:
        print_json({"last_cursor": last, "oldest_resumable_cursor": pruned})
        return
    click.echo(f"last cursor {last}; consumers may resume from cursor {pruned} or later")
