"""`AccessClient` against the service over real HTTP (a werkzeug server in a thread): it follows the feed in
its own thread, and takes a new snapshot when its cursor was pruned."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from werkzeug.serving import make_server

from entitlement_sync.bootstrap import Container
from entitlement_sync.client import AccessClient
from entitlement_sync.db import transaction
from entitlement_sync.web import create_app
from tests.conftest import READ_TOKEN, eventually

LATER = datetime.now(UTC) + timedelta(days=30)


@pytest.fixture
def internal_url(container: Container) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, create_app(container, "internal"), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_the_client_follows_grants_and_revokes(container: Container, internal_url: str) -> None:
    container.overrides.grant("cus_1", "api_access", LATER, "t", "t")
    with AccessClient(internal_url, READ_TOKEN, wait_seconds=2) as client:
        assert client.wait_until_ready(30)
        assert client.has_access("cus_1", "api_access")

        denial = container.overrides.deny("cus_1", "api_access", None, "t", "t")
        container.overrides.grant("cus_2", "sso", LATER, "t", "t")
        assert eventually(lambda: client.has_access("cus_2", "sso"))
        assert not client.has_access("cus_1", "api_access")

        container.overrides.revoke(denial.id, "t")
        assert eventually(lambda: client.has_access("cus_1", "api_access"))
        assert client.stale == 0.0 and client.snapshots == 1


def test_the_client_takes_a_new_snapshot_when_its_cursor_was_pruned(container: Container, internal_url: str) -> None:
    container.overrides.grant("cus_1", "api_access", LATER, "t", "t")
    client = AccessClient(internal_url, READ_TOKEN, wait_seconds=0.5, start=False)
    client.poll_once()
    container.overrides.grant("cus_2", "sso", LATER, "t", "t")
    with transaction(container.new_session) as session:
        session.execute(text("UPDATE access_feed SET changed_at = :old"), {"old": datetime.now(UTC) - timedelta(2)})
    container.feed.prune(timedelta(days=1))

    client.poll_once()  # 410
    client.poll_once()  # the new snapshot

    assert client.snapshots == 2 and client.has_access("cus_2", "sso")
    client.close()
