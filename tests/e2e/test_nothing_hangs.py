"""Scenarios 8-10 of the fault suite (issue 8, "nothing that hangs"): a Redis that hangs, a PostgreSQL that
hangs, and a web worker killed mid-request. Hanging is SIGSTOP: the server keeps its port and its open
connections but answers nothing, which neither a refused connection nor a stopped server shows.

Timings are measured and recorded (docs/reliability.md), not asserted beyond Stripe's own 10 s webhook timeout.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
import requests

from entitlement_sync.models import EventStatus
from tests.conftest import TEST_DATABASE_URL
from tests.e2e.harness import READ_TOKEN, Service, wait_until
from tests.e2e.invariants import Inspector, record
from tests.e2e.servers import PrivatePostgres, PrivateRedis
from tests.e2e.test_fault_injection import QUICK_RECOVERY, scenario

pytestmark = pytest.mark.e2e

# The sweep may take an event the receiver left `received` 3 s after it was stored (the default is 10 s).
SETTINGS = {**QUICK_RECOVERY, "RECEIVED_GRACE_SECONDS": "3"}
STRIPE_WEBHOOK_TIMEOUT = 10.0  # Stripe counts a slower answer as a failed delivery
FROZEN_SECONDS = 8.0


@pytest.fixture
def inspector() -> Iterator[Inspector]:
    assert TEST_DATABASE_URL
    inspector = Inspector(TEST_DATABASE_URL)
    yield inspector
    inspector.close()


class Reader:
    """Reads a customer's entitlements through the read API in a loop, as an internal service would."""

    def __init__(self, service: Service, customer: str) -> None:
        self._url = f"{service.url}/v1/customers/{customer}/entitlements"
        self.statuses: Counter[int] = Counter()
        self.slowest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        session = requests.Session()
        headers = {"Authorization": f"Bearer {READ_TOKEN}"}
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                status = session.get(self._url, headers=headers, timeout=15).status_code
            except requests.RequestException:
                status = 0
            self.statuses[status] += 1
            self.slowest = max(self.slowest, time.monotonic() - started)
            time.sleep(0.05)


def answers_since(run, first: int) -> tuple[dict[int, int], float]:  # type: ignore[no-untyped-def]
    """(HTTP statuses, slowest answer in s) of the deliveries made since the `first`-th."""
    since = list(run.sender.deliveries)[first:]
    return dict(Counter(record.status for record in since)), round(max((r.seconds for r in since), default=0.0), 2)


def starter(launch: Callable[..., Service], services: list[Service], **extra: str) -> Callable[[str], str]:
    def start_on(stripe_url: str) -> str:
        service = launch(stripe_url, **SETTINGS, **extra)
        service.start_web(workers=4)
        service.start_worker(processes=2, threads=4)
        services.append(service)
        return service.url

    return start_on


def test_redis_frozen_mid_run_webhooks_answered_2xx_reads_unaffected_and_all_converges(launch, inspector, tmp_path):
    redis_server = PrivateRedis(tmp_path)
    redis_server.start()
    services: list[Service] = []
    try:
        with scenario(200, seed=8, sender_url=starter(launch, services, redis_url=redis_server.url)) as run:
            for index in run.workload.rounds(changes=350, events_per_round=50):
                if index == 3:
                    run.throttle(max_pending=0)
                    redis_server.freeze()
                    frozen_at, before = time.monotonic(), len(run.sender.deliveries)
                    reader = Reader(services[0], run.workload.customers[0])
                if index == 6:
                    run.throttle(max_pending=0)
                    time.sleep(max(0.0, FROZEN_SECONDS - (time.monotonic() - frozen_at)))
                    reader.stop()
                    answers, slowest = answers_since(run, before)
                    while_frozen = {
                        "deliveries while Redis was frozen": sum(answers.values()),
                        "answers while frozen": answers,
                        "slowest webhook answer while frozen s": slowest,
                        "events left received for the sweep": inspector.count(EventStatus.RECEIVED),
                        "reads while frozen": dict(reader.statuses),
                        "slowest read while frozen s": round(reader.slowest, 2),
                        "frozen seconds": round(time.monotonic() - frozen_at, 1),
                    }
                    redis_server.thaw()
                run.throttle()
            seconds, snapshot = run.finish(inspector)
            figures = run.figures(seconds, snapshot)
    finally:
        redis_server.thaw()
        redis_server.stop()
    assert set(while_frozen["answers while frozen"]) == {200}, while_frozen
    assert set(while_frozen["reads while frozen"]) == {200}, while_frozen
    assert while_frozen["events left received for the sweep"] > 0
    assert while_frozen["slowest webhook answer while frozen s"] < STRIPE_WEBHOOK_TIMEOUT
    record("8. Redis frozen (SIGSTOP) mid-run, then SIGCONT", {**figures, **while_frozen})


def test_postgres_frozen_mid_run_webhooks_answered_503_and_nothing_lost(launch):
    postgres = PrivatePostgres()
    inspector = Inspector(postgres.url)
    services: list[Service] = []
    try:
        postgres.start()
        with scenario(200, seed=9, sender_url=starter(launch, services, database_url=postgres.url)) as run:
            for index in run.workload.rounds(changes=350, events_per_round=50):
                if index == 3:
                    run.throttle(max_pending=0)
                    postgres.freeze()
                    frozen_at, before = time.monotonic(), len(run.sender.deliveries)
                if index == 5:
                    time.sleep(max(0.0, FROZEN_SECONDS - (time.monotonic() - frozen_at)))
                    answers, slowest = answers_since(run, before)
                    while_frozen = {
                        "answers while frozen": answers,
                        "slowest webhook answer while frozen s": slowest,
                        "frozen seconds": round(time.monotonic() - frozen_at, 1),
                    }
                    postgres.thaw()
                if not 3 <= index < 5:
                    run.throttle()
            seconds, snapshot = run.finish(inspector)
            figures = {**run.figures(seconds, snapshot), **while_frozen}
    finally:
        postgres.thaw()
        inspector.close()
        postgres.remove()
    assert while_frozen["answers while frozen"].get(503, 0) > 0, while_frozen
    assert set(figures["http"]) <= {200, 503}, figures["http"]
    assert while_frozen["slowest webhook answer while frozen s"] < STRIPE_WEBHOOK_TIMEOUT
    record("9. PostgreSQL frozen (SIGSTOP) mid-run, then SIGCONT", figures)


def test_web_worker_killed_mid_request_stripe_redelivers_and_all_converges(launch, inspector):
    services: list[Service] = []
    with scenario(200, seed=10, sender_url=starter(launch, services)) as run:
        kills = 0
        for index in run.workload.rounds(changes=350, events_per_round=50):
            if index >= 2 and not unanswered(run) and kills < 10:
                # Deliveries are in flight on every worker: a kill cuts one mid-request (until the sender saw it).
                time.sleep(0.2)
                signal_sent, victim = time.monotonic(), services[0].web_worker_pids()[0]
                os.kill(victim, signal.SIGKILL)
                kills += 1

                def replaced(victim: int = victim) -> bool:  # reaped, and a new worker forked in its place
                    pids = services[0].web_worker_pids()
                    return victim not in pids and len(pids) == 4

                wait_until(replaced, 30, "gunicorn to replace the worker")
                respawn = time.monotonic() - signal_sent
            run.throttle()
        seconds, snapshot = run.finish(inspector)
        figures = run.figures(seconds, snapshot)
    assert unanswered(run) > 0, "no kill landed mid-request"
    record(
        "10. a gunicorn worker killed (SIGKILL) mid-request",
        {
            **figures,
            "workers killed": kills,
            "deliveries cut without an answer": unanswered(run),
            "seconds until gunicorn had 4 workers again": round(respawn, 1),
        },
    )


def unanswered(run) -> int:  # type: ignore[no-untyped-def]
    return sum(record.status == 0 for record in list(run.sender.deliveries))
