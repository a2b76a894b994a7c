"""The access feed for internal services, behind the read API's bearer tokens: the changes after a cursor
(optionally a long poll), and the snapshot a new consumer starts from."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import BadRequest

from ..errors import FeedCursorGone
from ..feed import FeedChange, SnapshotRow
from ._container import container
from .access import require_bearer_token

feed = Blueprint("feed", __name__, url_prefix="/v1")
feed.before_request(require_bearer_token)


@feed.get("/access-changes")
def access_changes() -> ResponseReturnValue:
    """`?after=<cursor>&limit=<n>&wait=<seconds>`: the changes after the cursor, oldest first."""
    after = _number("after", int, 0)
    limit = _number("limit", int, 100)
    wait = _number("wait", float, 0.0)
    try:
        page = container().feed.changes(after, limit, wait)
    except FeedCursorGone as gone:
        return jsonify(error=str(gone), snapshot="/v1/access-snapshot"), 410
    return jsonify(changes=[_change(change) for change in page.changes], next_cursor=page.next_cursor)


@feed.get("/access-snapshot")
def access_snapshot() -> ResponseReturnValue:
    """`?after_customer=<id>&limit=<customers>`: a page of the current state and the cursor it is at."""
    page = container().feed.snapshot(request.args.get("after_customer", ""), _number("limit", int, 1000))
    return jsonify(
        cursor=page.cursor,
        access=[_row(row) for row in page.rows],
        next_after_customer=page.next_after_customer,
    )


def _number(name: str, kind: type[int] | type[float], default: Any) -> Any:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a number") from None
    if value < 0:
        raise BadRequest(f"{name} must not be negative")
    return value


def _change(change: FeedChange) -> dict[str, Any]:
    return {
        "cursor": change.cursor,
        "customer": change.customer,
        "lookup_key": change.lookup_key,
        "feature": change.features[0] if change.features else None,
        "features": change.features,
        "change": change.change,
        "at": change.at.isoformat(),
        "cause": change.cause,
    }


def _row(row: SnapshotRow) -> dict[str, Any]:
    return {
        "customer": row.customer,
        "lookup_key": row.lookup_key,
        "granted": row.granted,
        "feature": row.features[0] if row.features else None,
        "features": row.features,
    }
