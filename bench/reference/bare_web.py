"""The bare web reference under gunicorn: Flask + HMAC check + fast JSON + one INSERT + one Dramatiq send,
and a read handler running the same SELECT as ours.

    gunicorn --workers 2 bench.reference.bare_web:app
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time

import orjson
import psycopg
from flask import Flask, Response, request

from entitlement_sync.store import decisions

from .bare_worker import DSN, bare_sync

SECRET = os.environ.get("STRIPE_WEBHOOK_SECRETS", "").split(",")[0].encode()
TOKEN = os.environ.get("ACCESS_API_TOKENS", "").split(",")[0]
# The same SELECT as ours (taken from our store, so that the two never drift apart): a customer's effective
# access and sync state in one statement.
READ = decisions.DECISIONS.driver_sql

app = Flask(__name__)
_db: dict[str, psycopg.Connection] = {}  # one connection per process (gunicorn's sync workers fork)


def _connection() -> psycopg.Connection:
    if "db" not in _db:
        _db["db"] = psycopg.connect(DSN, autocommit=True)
    return _db["db"]


def _verified(body: bytes, header: str) -> bool:
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    timestamp = parts.get("t", "0")
    if abs(time.time() - int(timestamp)) > 300:
        return False
    expected = hmac.new(SECRET, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts.get("v1", ""))


@app.post("/webhooks/stripe")
def webhook() -> Response:
    body = request.get_data()
    if not _verified(body, request.headers.get("Stripe-Signature", "")):
        return Response(b'{"error":"bad signature"}', 400, mimetype="application/json")
    event = orjson.loads(body)
    customer = event["data"]["object"].get("customer")
    _connection().execute(
        "INSERT INTO bare_events (id, type, customer_id, payload) VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (event["id"], event["type"], customer, body.decode()),
    )
    if customer:
        bare_sync.send(customer)
    return Response(b'{"status":"accepted"}', 200, mimetype="application/json")


@app.get("/v1/customers/<customer>/entitlements")
def entitlements(customer: str) -> Response:
    if request.headers.get("Authorization", "") != f"Bearer {TOKEN}":
        return Response(b'{"error":"unauthorized"}', 401, mimetype="application/json")
    rows = _connection().execute(READ, {"customer": customer}).fetchall()
    synced, unseen = rows[0][0], rows[0][1]
    rows = [r for r in rows if r[2] is not None]
    decisions = [(r[3], {"lookup_key": r[2], "reason": r[4], "sources": r[5], "since": r[6].isoformat()}) for r in rows]
    document = {
        "customer": customer,
        "entitlements": [item for granted, item in decisions if granted],
        "refused": [item for granted, item in decisions if granted is False],
        "synced_at": synced.isoformat() if synced else None,
        "stale": bool(unseen),
    }
    return Response(orjson.dumps(document), 200, mimetype="application/json")


@app.get("/healthz")
def healthz() -> Response:
    return Response(b'{"status":"ok"}', 200, mimetype="application/json")
