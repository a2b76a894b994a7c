"""`entitlement-sync`: one click group; each concern's commands live in a module of their own.

Exit codes: 0 success, 1 something failed (see stderr), 2 usage error, 130 interrupted (`sync all`).
"""

from __future__ import annotations

from typing import Any

import click

from ..errors import EntitlementSyncError
from . import overrides as _overrides  # noqa: F401  (registers grant/deny/... on `access`)
from .access import access
from .deliveries import deliveries
from .demo import demo
from .doctor import doctor
from .events import events
from .features import features
from .feed import feed
from .retention import prune_events
from .run import db, dev, serve, worker
from .sync import sync


class _Main(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EntitlementSyncError as error:
            # Stripe or the database said no: one line for the operator, exit 1, no traceback.
            click.echo(f"error: {type(error).__name__}: {error}", err=True)
            ctx.exit(1)


@click.group(cls=_Main)
@click.version_option(package_name="entitlement-sync")
def main() -> None:
    """Keep a local feature-access table in step with Stripe Billing Entitlements."""


for command in (db, serve, worker, dev, demo, doctor, events, sync, features, access, feed, deliveries):
    main.add_command(command)
events.add_command(prune_events)
