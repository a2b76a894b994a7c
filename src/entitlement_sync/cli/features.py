"""`entitlement-sync features …`: the feature catalog and which product grants which feature."""

from __future__ import annotations

import click

from ..bootstrap import Container
from ._common import dry_run_option, json_option, print_json, table, with_container


@click.group()
def features() -> None:
    """The feature catalog, kept locally (archived features included)."""


@features.command("sync")
@click.option(
    "--product",
    "products",
    multiple=True,
    help="Also fetch this product's features (products named by subscriptions are always fetched).",
)
@dry_run_option
@json_option
@with_container
def sync_features(container: Container, products: tuple[str, ...], dry_run: bool, as_json: bool) -> None:
    """Fetch every feature and each known product's features from Stripe into the local tables."""
    report = container.catalog.sync(products, dry_run=dry_run)
    if as_json:
        print_json(report)
        return
    prefix = "dry run, nothing written: " if dry_run else ""
    click.echo(
        f"{prefix}{report.features} feature(s) ({report.archived} archived; {report.new_features} new, "
        f"{report.changed_features} changed); {report.products} product(s): "
        f"{report.links_added} link(s) added, {report.links_removed} removed"
    )


@features.command("list")
@json_option
@with_container
def list_features(container: Container, as_json: bool) -> None:
    """Every feature in the local catalog, with the products that grant it."""
    listing = container.catalog.list_features()
    if as_json:
        print_json({"features": listing})
        return
    table(
        f"{len(listing)} feature(s)",
        ["lookup key", "name", "id", "active", "granted by products"],
        [(f.lookup_key, f.name, f.id, "yes" if f.active else "archived", ", ".join(f.products)) for f in listing],
    )


@features.command("drift")
@json_option
@with_container
def drift(container: Container, as_json: bool) -> None:
    """Customers whose Stripe entitlements lack a feature their subscribed products carry in the catalog now,
    or hold one those products no longer carry (run `features sync` first; no call to Stripe)."""
    report = container.drift.report()
    if as_json:
        print_json(report)
        return
    if not report.catalog_links:
        click.echo("the local catalog is empty: run `entitlement-sync features sync` first")
        return
    click.echo(f"{report.customers_checked} customer(s) with subscriptions checked, {len(report.customers)} drifting")
    table(
        "by feature",
        ["feature", "lookup key", "missing", "extra"],
        [(f.feature, f.lookup_key, f.missing, f.extra) for f in report.by_feature],
    )
    table(
        "by product (customers missing one of its features)", ["product", "customers"], list(report.by_product.items())
    )
    rows = [
        (
            d.customer,
            ", ".join(f"{r.lookup_key} ({r.feature})" for r in d.missing),
            ", ".join(f"{r.lookup_key} ({r.feature})" for r in d.extra),
        )
        for d in report.customers
    ]
    table("customers", ["customer", "missing from Stripe's list", "extra in Stripe's list"], rows)
