"""The console's pages. Each view reads the request, calls one use case of the container, renders."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from flask import abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from ...events import HANDLED_TYPES
from ...inbox import ReplayReport
from ...logs import get_logger
from ...models import EventStatus
from ...store.inbox import EventFilter
from .._container import container
from .chart import last_hour_chart
from .guard import console

log = get_logger(__name__)
STATUSES = [*(status.value for status in EventStatus), "stuck"]
SINCE_CHOICES = {
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "6h": timedelta(hours=6),
    "24h": timedelta(days=1),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}


@console.get("/")
def overview() -> ResponseReturnValue:
    report = container().overview.last_hour()
    return render_template("console/overview.html", report=report, chart=last_hour_chart(report.minutes))


@console.get("/events")
def events() -> ResponseReturnValue:
    form = {key: request.args.get(key, "").strip() for key in ("status", "type", "customer", "since")}
    if form["status"] and form["status"] not in STATUSES:
        abort(400, description=f"unknown status {form['status']!r}")
    where = EventFilter(
        status=form["status"] or None,
        type=form["type"] or None,
        customer_id=form["customer"] or None,
        since=_since(form["since"]),
        limit=min(max(request.args.get("limit", 100, type=int) or 100, 1), 1000),
    )
    rows = container().inbox.list_events(where)
    return render_template(
        "console/events.html",
        rows=rows,
        form=form,
        statuses=STATUSES,
        types=sorted(HANDLED_TYPES),
        since_choices=SINCE_CHOICES,
    )


def _since(text: str) -> datetime | None:
    """One of the menu's spans (`1h`), or an ISO date/time (UTC unless it says otherwise)."""
    if not text:
        return None
    if text in SINCE_CHOICES:
        return datetime.now(UTC) - SINCE_CHOICES[text]
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        abort(400, description=f"since {text!r}: choose a span or give an ISO date like 2026-11-20T08:00")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@console.get("/events/<event_id>")
def event(event_id: str) -> ResponseReturnValue:
    detail = container().inbox.show_event(event_id)
    if detail is None:
        abort(404, description=f"no event {event_id} in the inbox")
    payload = json.dumps(detail.payload, indent=2, sort_keys=True, ensure_ascii=False)
    return render_template("console/event.html", detail=detail, payload=payload)


@console.post("/events/<event_id>/replay")
def replay_event(event_id: str) -> ResponseReturnValue:
    _flash_replay(container().inbox.replay([event_id]))
    return redirect(url_for("console.event", event_id=event_id))


@console.post("/events/replay-failed")
def replay_failed() -> ResponseReturnValue:
    report = container().inbox.replay_failed(None, None)
    if not report.taken:
        flash("No failed events to replay.", "info")
    else:
        _flash_replay(report)
    return redirect(url_for("console.events", status="failed"))


def _flash_replay(report: ReplayReport) -> None:
    log.info("console.replay", queued=len(report.queued), pending=len(report.pending), skipped=len(report.skipped))
    if report.queued:
        flash(f"Replaying {len(report.queued)} event(s): back on the job queue.", "ok")
    if report.pending:
        flash(
            f"{len(report.pending)} event(s) reopened, but the broker refused them: the sweep will send them.", "warn"
        )
    for event_id, reason in report.skipped.items():
        flash(f"{event_id} not replayed: {reason}", "warn")


@console.get("/customers")
def customer_search() -> ResponseReturnValue:
    customer_id = request.args.get("customer", "").strip()
    if customer_id:
        return redirect(url_for("console.customer", customer_id=customer_id))
    return render_template("console/customer_search.html")


@console.get("/customers/<customer_id>")
def customer(customer_id: str) -> ResponseReturnValue:
    return render_template("console/customer.html", page=container().customers.page(customer_id))


@console.post("/customers/<customer_id>/sync")
def sync_customer(customer_id: str) -> ResponseReturnValue:
    report = container().reconciler.sync_customers([customer_id])
    log.info("console.sync_customer", customer=customer_id, granted=report.granted, revoked=report.revoked)
    change = report.changes[0] if report.changes else None
    if change is None:
        flash("Synced from Stripe: nothing changed.", "ok")
    elif change.error:
        flash(f"Sync failed: {change.error}", "error")
    else:
        granted, revoked = ", ".join(change.granted) or "nothing", ", ".join(change.revoked) or "nothing"
        flash(f"Synced from Stripe: granted {granted}; revoked {revoked}.", "ok")
    return redirect(url_for("console.customer", customer_id=customer_id))


@console.app_template_filter("ago")
def ago(moment: datetime | None) -> str:
    if moment is None:
        return "never"
    return f"{duration((datetime.now(UTC) - moment).total_seconds())} ago"


@console.app_template_filter("duration")
def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = max(seconds, 0.0)
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"


@console.app_template_filter("when")
def when(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@console.app_template_filter("unix")
def unix(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)
