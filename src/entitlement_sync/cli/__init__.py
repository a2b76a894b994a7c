"""`entitlement-sync`: one click group; each concern's commands live in a module of their own."""

from __future__ import annotations

import click

from .demo import demo
from .run import db, dev, serve, worker


@click.group()
@click.version_option(package_name="entitlement-sync")
def main() -> None:
    """Keep a local feature-access table in step with Stripe Billing Entitlements."""


for command in (db, serve, worker, dev, demo):
    main.add_command(command)
