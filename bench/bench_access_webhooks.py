"""How fast one subscriber's access webhooks drain, beside a bare loop of the same signed POSTs (no database).

The drain is the workers' use case (`Deliverer.drain`): lock the subscriber's oldest pending deliveries, post
them in order, record each answer, commit. The bare reference posts the same bodies, signed alike, to the same
local subscriber (a threaded `http.server` answering 204). Reps alternate, so machine load hits both alike.

python -m bench.bench_access_webhooks postgresql+psycopg://postgres@127.0.0.1:5432/bench
python -m bench.bench_access_webhooks                         # SQLite file in a temp dir
"""

from __future__ import annotations

import base64
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import create_engine, text

from entitlement_sync.bootstrap import bootstrap
from entitlement_sync.db import upgrade
from entitlement_sync.logs import configure_logging
from entitlement_sync.models import Base, WebhookDelivery
from entitlement_sync.outbound import signed_headers
from entitlement_sync.settings import Settings
from entitlement_sync.settings_parsers import parse_webhook_subscribers
from entitlement_sync.tasks import build_stub_broker

MESSAGES, REPS = 500, 3
SECRET = "whsec_" + base64.b64encode(b"bench-subscriber-secret").decode()


class Sink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def fresh_database(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        Base.metadata.drop_all(connection)
        connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
    engine.dispose()
    upgrade(url)


def main(url: str) -> None:
    configure_logging(level="WARNING")
    fresh_database(url)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{server.server_address[1]}/hook"
    settings = Settings(
        stripe_api_key="sk_test_bench",
        database_url=url,
        redis_url="",
        stripe_requests_per_second=0,
        access_webhooks=parse_webhook_subscribers(f"{hook}|{SECRET}"),
    )
    container = bootstrap(settings, broker=build_stub_broker())
    drained, bare = [], []
    for rep in range(REPS):
        until = datetime.now(UTC) + timedelta(days=1)
        for n in range(MESSAGES):
            container.overrides.grant(f"cus_{rep}_{n}", "api_access", until, "bench", "bench")
        with container.new_session() as session:
            body = session.query(WebhookDelivery.body).filter(WebhookDelivery.status == "pending").first()[0]
        started = time.perf_counter()
        delivered = 0
        while delivered < MESSAGES:
            delivered += container.deliverer.drain(hook).delivered
        drained.append(MESSAGES / (time.perf_counter() - started))
        http, started = requests.Session(), time.perf_counter()
        for n in range(MESSAGES):
            headers = signed_headers(SECRET, f"msg_bare_{rep}_{n}", body, datetime.now(UTC))
            assert http.post(hook, data=body, headers={**headers, "Content-Type": "application/json"}, timeout=5).ok
        bare.append(MESSAGES / (time.perf_counter() - started))
        print(f"rep {rep}: drain {drained[-1]:.0f} deliveries/s, bare signed POSTs {bare[-1]:.0f}/s")
    ratio = statistics.median(d / b for d, b in zip(drained, bare, strict=True))
    print(
        f"median: drain {statistics.median(drained):.0f}/s, bare {statistics.median(bare):.0f}/s, "
        f"ratio {ratio:.2f} ({MESSAGES} messages x {REPS} reps, {url.split(':')[0]})"
    )
    container.close()
    server.shutdown()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}")
