"""`entitlement-sync access show|explain|recompute`: what a customer can use now, since when, and why.
The operator's grants and denials are in `overrides.py`."""

from __future__ import annotations

from typing import Any

import click

from ..access import CustomerAccess, Granted
from ..bootstrap import Container
from ..explain import Explanation
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


@access.command("explain")
@click.argument("customer_id")
@click.argument("lookup_key")
@json_option
@with_container
def explain_access(container: Container, customer_id: str, lookup_key: str, as_json: bool) -> None:
    """Why the customer may (or may not) use LOOKUP_KEY: the answer, each policy layer, its inputs, its history."""
    explanation = container.explainer.explain(customer_id, lookup_key)
    if as_json:
        print_json(explanation)
        return
    _print_explanation(explanation)


def _print_explanation(e: Explanation) -> None:
    verdict = "GRANTED" if e.granted else "NOT GRANTED"
    click.echo(f"{e.customer} / {e.lookup_key}: {verdict} ({e.reason}) since {when(e.since) or '-'}")
    synced = when(e.synced_at) or "never"
    click.echo(f"last synced {synced}; stale: {'YES' if e.stale else 'no'}; rules: {e.rules}")
    if (e.fresh_granted, e.fresh_reason) != (e.granted, e.reason):
        click.echo(f"pending: the policy now says {e.fresh_reason}; the sweep (or `access recompute`) applies it")
    table(
        "the policy, layer by layer", ["layer", "outcome", "detail"], [(s.layer, s.outcome, s.detail) for s in e.steps]
    )
    table("sources", ["kind", "id", "detail"], [(s["kind"], s["id"], s["detail"]) for s in e.sources])
    table("Stripe's entitlements", ["entitlement", "feature"], [(i.id, i.feature_id) for i in e.entitlements])
    subscriptions = [(s.id, s.status, ", ".join(s.product_ids), when(s.past_due_since)) for s in e.subscriptions]
    table("subscriptions", ["subscription", "status", "products", "past_due since"], subscriptions)
    table("catalog", ["product", "feature"], [(link.product_id, link.feature_id) for link in e.catalog])
    overrides = [(o.id, o.kind, when(o.expires_at) or "never", o.created_by, o.reason) for o in e.overrides]
    table("grants and denials", ["id", "kind", "expires", "by", "reason"], overrides)
    history = [(when(h.changed_at), h.change, h.reason, h.previous_reason, h.cause) for h in e.history]
    table("history (newest first)", ["when", "change", "reason", "was", "cause"], history)


@access.command("recompute")
@click.argument("customer_ids", nargs=-1)
@click.option("--all", "everyone", is_flag=True, help="Every customer the local tables know.")
@json_option
@with_container
def recompute_access(container: Container, customer_ids: tuple[str, ...], everyone: bool, as_json: bool) -> None:
    """Recompute effective access now (after changing ACCESS_* settings; nothing else needs it)."""
    if not customer_ids and not everyone:
        raise click.UsageError("name customers, or pass --all")
    customers = container.access_policy.all_customers() if everyone else set(customer_ids)
    changes = container.access_policy.recompute_customers(customers, "ops:recompute")
    if as_json:
        print_json({"customers": len(customers), "changes": changes})
        return
    click.echo(f"{len(customers)} customer(s) recomputed, {len(changes)} change(s)")
    table(
        None,
        ["customer", "lookup key", "change", "reason", "was"],
        [(c.customer_id, c.lookup_key, c.change, c.reason, c.previous_reason) for c in changes],
    )
