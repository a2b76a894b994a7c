"""`entitlement-sync access show`: what a customer can use now, since when, and why."""

from __future__ import annotations

from typing import Any

import click

from ..access import CustomerAccess, Granted
from ..bootstrap import Container
from ..history import Change
from ._common import json_option, print_json, table, when, with_container


@click.group()
def access() -> None:
    """Customers' access, as the local table holds it."""


@access.command("show")
@click.argument("customer_id")
@click.option("--history", is_flag=True, help="Also list grants and revokes with the event behind each.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100_000), help="History rows.")
@json_option
@with_container
def show_access(container: Container, customer_id: str, history: bool, limit: int, as_json: bool) -> None:
    """The features the customer may use now (from the local table; no call to Stripe)."""
    current = container.reader.entitlements_for(customer_id)
    changes = container.history.history_of(customer_id, limit) if history else []
    names = container.history.feature_names([g.feature for g in current.entitlements] + [c.feature for c in changes])
    if as_json:
        entitlements = [{**_fields(g), "name": names.get(g.feature)} for g in current.entitlements]
        document: dict[str, Any] = {
            "customer": customer_id,
            "synced_at": current.synced_at,
            "entitlements": entitlements,
        }
        if history:
            document["history"] = changes
        print_json(document)
        return
    _print_access(current, changes if history else None, names)


def _print_access(current: CustomerAccess, changes: list[Change] | None, names: dict[str, str]) -> None:
    synced = when(current.synced_at) or "never (this customer was never synced: nothing is granted)"
    click.echo(f"customer {current.customer}, last synced {synced}")
    table(
        "access now",
        ["lookup key", "name", "feature", "since"],
        [(g.lookup_key, names.get(g.feature, ""), g.feature, when(g.granted_at)) for g in current.entitlements],
    )
    if changes is not None:
        table(
            "history (newest first)",
            ["when", "change", "lookup key", "feature", "event"],
            [(when(c.changed_at), c.change, c.lookup_key, c.feature, c.event) for c in changes],
        )


def _fields(granted: Granted) -> dict[str, Any]:
    return {
        "lookup_key": granted.lookup_key,
        "feature": granted.feature,
        "entitlement": granted.entitlement,
        "granted_at": granted.granted_at,
    }
