"""`entitlement-sync access grant|deny|revoke-grant|grants`: grants and denials made outside Stripe."""

from __future__ import annotations

import getpass
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from ..bootstrap import Container
from ..overrides import OverrideRecord
from ._common import _RELATIVE, _UNITS, json_option, print_json, table, when, with_container
from .access import access


class Until(click.ParamType[datetime]):
    """An ISO-8601 time (UTC unless it says otherwise), or a duration from now: 30d, 12h, 2w."""

    name = "until"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        text = str(value).strip().lower().removeprefix("+")
        match = _RELATIVE.match(text)
        if match:
            return datetime.now(UTC) + timedelta(**{_UNITS[match[2]]: int(match[1])})
        try:
            moment = datetime.fromisoformat(str(value).strip())
        except ValueError:
            self.fail(f"{value!r}: use an ISO time like 2027-01-01T00:00Z, or 30d, 12h, 2w", param, ctx)
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name (a container with an unnamed uid)
        return f"uid:{os.getuid()}"


by_option = click.option("--by", default=_os_user, show_default="the OS user", help="Who decided this.")
reason_option = click.option("--reason", required=True, help="Why: the record that answers 'who gave them this?'")


@access.command("grant")
@click.argument("customer_id")
@click.argument("lookup_key")
@click.option("--until", "until", type=Until(), required=True, help="When the grant ends (ISO-8601, or 30d).")
@reason_option
@by_option
@json_option
@with_container
def grant(
    container: Container, customer_id: str, lookup_key: str, until: datetime, reason: str, by: str, as_json: bool
) -> None:
    """Grant LOOKUP_KEY to the customer outside Stripe until a time; an explicit denial still wins."""
    _print(container.overrides.grant(customer_id, lookup_key, until, reason, by), as_json)


@access.command("deny")
@click.argument("customer_id")
@click.argument("lookup_key")
@click.option("--until", "until", type=Until(), help="When the denial ends (default: until revoked).")
@reason_option
@by_option
@json_option
@with_container
def deny(
    container: Container, customer_id: str, lookup_key: str, until: datetime | None, reason: str, by: str, as_json: bool
) -> None:
    """Deny LOOKUP_KEY to the customer, whatever Stripe or a grant says, until a time or until revoked."""
    _print(container.overrides.deny(customer_id, lookup_key, until, reason, by), as_json)


@access.command("revoke-grant")
@click.argument("override_id", type=int)
@by_option
@json_option
@with_container
def revoke_grant(container: Container, override_id: int, by: str, as_json: bool) -> None:
    """End a grant or a denial now (it stays listed, with who revoked it)."""
    _print(container.overrides.revoke(override_id, by), as_json)


@access.command("grants")
@click.option("--customer", help="Only this customer's.")
@click.option("--expired", is_flag=True, help="The expired and revoked ones instead of those in force.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100_000))
@json_option
@with_container
def list_grants(container: Container, customer: str | None, expired: bool, limit: int, as_json: bool) -> None:
    """Grants and denials in force (or, with --expired, those that ended), newest first."""
    records = container.overrides.list(customer, expired=expired, limit=limit)
    if as_json:
        print_json({"grants": records})
        return
    rows = [
        (
            r.id,
            r.kind,
            r.customer,
            r.lookup_key,
            when(r.expires_at) or "until revoked",
            r.created_by,
            r.reason,
            f"revoked {when(r.revoked_at)} by {r.revoked_by}" if r.revoked_at else "",
        )
        for r in records
    ]
    title = "ended grants and denials" if expired else "grants and denials in force"
    table(title, ["id", "kind", "customer", "key", "expires", "by", "reason", ""], rows)


def _print(record: OverrideRecord, as_json: bool) -> None:
    if as_json:
        print_json(record)
        return
    state = f"revoked by {record.revoked_by}" if record.revoked_at else f"until {when(record.expires_at) or 'revoked'}"
    click.echo(f"#{record.id}: {record.kind} {record.lookup_key} to {record.customer}, {state} ({record.reason})")
    for change in record.changes:
        click.echo(
            f"  effective access: {change.lookup_key} {change.change} ({change.previous_reason} -> {change.reason})"
        )
