"""What a webhook costs the receiver: verify, store, commit, enqueue, answer. In-process through Flask's WSGI
stack, so the figure is the service's own work without network or gunicorn overhead.

    python bench/bench_webhook.py                                # SQLite + in-memory broker
    python bench/bench_webhook.py postgresql+psycopg://postgres@127.0.0.1:5432/test redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import delete

from entitlement_sync.bootstrap import bootstrap
from entitlement_sync.db import upgrade
from entitlement_sync.logs import configure_logging
from entitlement_sync.models import Base
from entitlement_sync.settings import Settings
from entitlement_sync.tasks import build_redis_broker, build_stub_broker
from entitlement_sync.testing import active_entitlement, sign, summary_event
from entitlement_sync.web import create_app

EVENTS = 2_000
SECRET = "whsec_bench"


def main() -> None:
    configure_logging("WARNING")
    database_url = sys.argv[1] if len(sys.argv) > 1 else f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}"
    redis_url = sys.argv[2] if len(sys.argv) > 2 else None
    settings = Settings(
        stripe_api_key="sk_test_bench",
        webhook_secrets=(SECRET,),
        database_url=database_url,
        redis_url=redis_url or "redis://unused",
        redis_namespace=f"bench-{uuid.uuid4().hex[:6]}",
    )
    upgrade(database_url)
    broker = build_redis_broker(settings) if redis_url else build_stub_broker()
    container = bootstrap(settings, broker=broker)
    with container.engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(delete(table))
    client = create_app(container).test_client()
    bodies = [
        json.dumps(summary_event(f"cus_{n % 500}", [active_entitlement("feat_api", "api_access")])).encode()
        for n in range(EVENTS)
    ]
    timings = []
    for body in bodies:
        headers = {"Stripe-Signature": sign(body, SECRET), "Content-Type": "application/json"}
        started = time.perf_counter()
        response = client.post("/webhooks/stripe", data=body, headers=headers)
        timings.append((time.perf_counter() - started) * 1000)
        assert response.json["status"] == "accepted", response.json
    timings.sort()
    broker.flush_all()
    backend = f"{database_url.split(':')[0]} + {'Redis' if redis_url else 'StubBroker'}"
    print(
        f"{EVENTS} signed webhooks on {backend}: p50 {statistics.median(timings):.2f} ms, "
        f"p99 {timings[int(EVENTS * 0.99)]:.2f} ms, {EVENTS / (sum(timings) / 1000):.0f}/s on one thread"
    )


if __name__ == "__main__":
    main()
