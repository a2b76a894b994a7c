"""The bare worker reference: a Dramatiq actor doing one GET to Stripe and one replace transaction.

    dramatiq bench.reference.bare_worker --processes 2 --threads 8 --queues bare

Nothing else: no inbox, no ordering guard, no retries policy of its own, no history. BARE_STRIPE_RATE > 0 spaces
the GETs of all processes at that rate (one Redis counter), for the burst part.
"""

from __future__ import annotations

import os
import threading
import time

import dramatiq
import psycopg
import redis
import requests
from dramatiq.brokers.redis import RedisBroker

NAMESPACE = os.environ.get("REDIS_NAMESPACE", "es-bench")
STRIPE = os.environ.get("STRIPE_API_BASE", "http://127.0.0.1:9")
AUTHORIZATION = {"Authorization": f"Bearer {os.environ.get('STRIPE_API_KEY', '')}"}
DSN = os.environ.get("DATABASE_URL", "").replace("postgresql+psycopg://", "postgresql://")
RATE = float(os.environ.get("BARE_STRIPE_RATE") or 0)

broker = RedisBroker(url=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15"), namespace=NAMESPACE)
dramatiq.set_broker(broker)
_local = threading.local()


def _connection() -> psycopg.Connection:
    if not hasattr(_local, "db"):
        _local.db = psycopg.connect(DSN)
        _local.http = requests.Session()
    return _local.db


def _pace() -> None:
    client = _local.__dict__.setdefault("redis", redis.Redis.from_url(os.environ["REDIS_URL"]))
    start_key, count_key = f"{NAMESPACE}:bare-pace-start", f"{NAMESPACE}:bare-pace-count"
    client.set(start_key, f"{time.time():.6f}", nx=True)
    slot = client.incr(count_key) - 1
    due = float(client.get(start_key)) + slot / RATE
    time.sleep(max(0.0, due - time.time()))


@dramatiq.actor(queue_name="bare", max_retries=3, min_backoff=100)
def bare_sync(customer_id: str) -> None:
    db = _connection()
    if RATE:
        _pace()
    response = _local.http.get(
        f"{STRIPE}/v1/entitlements/active_entitlements",
        params={"customer": customer_id, "limit": 100},
        headers=AUTHORIZATION,
        timeout=5,
    )
    response.raise_for_status()
    rows = [(customer_id, e["feature"], e["lookup_key"], e["id"]) for e in response.json()["data"]]
    with db.transaction():
        db.execute("DELETE FROM bare_entitlements WHERE customer_id = %s", (customer_id,))
        if rows:
            db.cursor().executemany(
                "INSERT INTO bare_entitlements (customer_id, feature_id, lookup_key, entitlement_id)"
                " VALUES (%s, %s, %s, %s)",
                rows,
            )
