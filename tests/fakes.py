"""Test doubles. Stripe's HTTP API is faked with `responses` in front of the simulator's FakeStripe."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

import responses

from entitlement_sync.ports import ActiveEntitlement
from entitlement_sync.testing import FakeStripe

STRIPE_API = re.compile(r"https://api\.stripe\.com/.*")


@contextmanager
def stripe_over_responses(fake: FakeStripe | Any) -> Iterator[responses.RequestsMock]:
    """Route every call to api.stripe.com through `fake.handle(method, path, query, headers)`, as
    stripe-python's requests would go."""

    def answer(request):  # type: ignore[no-untyped-def]
        url = urlsplit(request.url)
        status, headers, body = fake.handle(request.method, url.path, parse_qs(url.query), dict(request.headers))
        return status, {"Content-Type": "application/json", **headers}, json.dumps(body)

    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        for method in (responses.GET, responses.POST, responses.DELETE):
            mock.add_callback(method, STRIPE_API, callback=answer)
        yield mock


class GatedSource:
    """An EntitlementSource whose answers wait for the test to open a gate: to stage races deterministically."""

    def __init__(self) -> None:
        self._answers: list[tuple[threading.Event, threading.Event, list[ActiveEntitlement]]] = []
        self._lock = threading.Lock()

    def will_answer(self, entitlements: list[ActiveEntitlement]) -> tuple[threading.Event, threading.Event]:
        """Queue an answer; returns (started, gate): `started` is set when the fetch begins, `gate` releases it."""
        started, gate = threading.Event(), threading.Event()
        with self._lock:
            self._answers.append((started, gate, entitlements))
        return started, gate

    def list_active_entitlements(self, customer_id: str) -> list[ActiveEntitlement]:
        with self._lock:
            started, gate, answer = self._answers.pop(0)
        started.set()
        assert gate.wait(10), "the test never opened the gate"
        return answer
