"""`AccessClient` over a fake service: the copy it keeps, what it answers when the service is away, 410, and
the OpenFeature provider on top. No thread, no network: each test drives `poll_once` itself."""

from __future__ import annotations

import subprocess
import sys

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason

from entitlement_sync.client import AccessClient
from entitlement_sync.client.openfeature_provider import EntitlementProvider
from tests.fakes import FakeFeedService, VirtualTime


@pytest.fixture
def service() -> FakeFeedService:
    service = FakeFeedService()
    service.flip("cus_a", "api_access", True)
    service.flip("cus_b", "sso", True)
    service.flip("cus_c", "api_access", False)  # known, refused
    return service


def client_of(service: FakeFeedService, time: VirtualTime | None = None, **options: object) -> AccessClient:
    time = time or VirtualTime()
    return AccessClient(
        "http://unused", "token", transport=service, monotonic=time.now, sleep=time.sleep, start=False, **options
    )


def copy_of(client: AccessClient, service: FakeFeedService) -> dict[tuple[str, str], bool]:
    return {pair: True for pair in service.table if client.has_access(*pair)}


def test_the_copy_starts_from_the_snapshot_and_follows_the_feed(service: FakeFeedService) -> None:
    client = client_of(service)
    client.poll_once()
    assert client.ready and client.has_access("cus_a", "api_access") and not client.has_access("cus_c", "api_access")

    service.flip("cus_a", "api_access", False)
    service.flip("cus_d", "reports", True)
    client.poll_once()

    assert not client.has_access("cus_a", "api_access")
    assert client.has_access("cus_d", "reports")
    assert client.cursor == 5


def test_pages_read_at_different_moments_end_equal_to_the_table(service: FakeFeedService) -> None:
    """A page read later is newer than the first one's cursor: replaying from that cursor settles both."""
    changes = iter([("cus_a", "api_access", False), ("cus_b", "sso", False), ("cus_c", "api_access", True)])

    def write_meanwhile() -> None:
        if (change := next(changes, None)) is not None:
            service.flip(*change)

    service.between_pages = write_meanwhile
    client = client_of(service, page_size=1)
    client.poll_once()

    granted = {pair for pair, on in service.table.items() if on}
    assert {pair for pair in service.table if client.has_access(*pair)} == granted


def test_the_snapshot_replays_the_feed_before_it_answers(service: FakeFeedService) -> None:
    service.between_pages = lambda: service.flip("cus_a", "api_access", False)
    client = client_of(service, page_size=1)
    client.poll_once()
    assert not client.has_access("cus_a", "api_access")


def test_when_the_service_is_away_the_last_copy_answers_and_says_how_stale(service: FakeFeedService) -> None:
    time = VirtualTime()
    client = client_of(service, time)
    client.poll_once()
    assert client.stale == 0.0

    service.down = True
    first, second = client.poll_once(), client.poll_once()
    time.advance(42)

    assert client.unreachable and client.has_access("cus_a", "api_access")
    assert client.stale == 42.0
    assert second == 2 * first  # backs off
    service.down = False
    client.poll_once()
    assert not client.unreachable and client.stale == 0.0


def test_a_server_error_counts_as_unreachable(service: FakeFeedService) -> None:
    client = client_of(service)
    client.poll_once()
    service.status = 503
    client.poll_once()
    assert client.unreachable and client.check("cus_a", "api_access").granted


def test_a_never_seen_customer_gets_the_default_only_while_the_copy_is_not_current(service: FakeFeedService) -> None:
    client = client_of(service, defaults={"api_access": True})
    assert client.has_access("cus_new", "api_access")  # no copy yet
    assert client.check("cus_new", "api_access").source == "default"

    client.poll_once()
    assert not client.has_access("cus_new", "api_access")  # current: nobody has it unless the table says so

    service.down = True
    client.poll_once()
    assert client.has_access("cus_new", "api_access")
    assert not client.has_access("cus_new", "sso")  # no default named: refused
    assert not client.has_access("cus_c", "api_access")  # known: the copy's answer, not the default


def test_a_cursor_gone_takes_a_new_snapshot(service: FakeFeedService) -> None:
    client = client_of(service)
    client.poll_once()
    service.flip("cus_a", "api_access", False)
    service.flip("cus_e", "sso", True)
    service.prune()
    service.changes.append({**service.changes[-1], "cursor": 6})  # the feed moved on past the pruned part
    service.pruned_through = 6

    client.poll_once()  # 410
    client.poll_once()  # the new snapshot

    assert client.snapshots == 2
    assert not client.has_access("cus_a", "api_access") and client.has_access("cus_e", "sso")


def test_each_change_reaches_on_change_after_the_copy_has_it(service: FakeFeedService) -> None:
    seen: list[tuple[str, bool]] = []
    client = client_of(
        service,
        on_change=lambda change: seen.append(
            (change["customer"], client.has_access(change["customer"], change["lookup_key"]))
        ),
    )
    client.poll_once()
    service.flip("cus_b", "sso", False)
    client.poll_once()
    assert seen == [("cus_b", False)]


def test_an_empty_answer_before_the_wait_is_over_pauses_the_next_poll(service: FakeFeedService) -> None:
    client = client_of(service, min_pause=1.0)
    client.poll_once()
    assert client.poll_once(wait=20) == 1.0  # the server answered at once: it had no thread to spare
    service.flip("cus_z", "sso", True)
    assert client.poll_once(wait=20) == 0.0


def test_the_client_imports_neither_flask_nor_sqlalchemy() -> None:
    check = "import sys, entitlement_sync.client; print(sorted({'flask', 'sqlalchemy'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# --- OpenFeature --------------------------------------------------------------------------------------


@pytest.fixture
def flags(service: FakeFeedService) -> object:
    client = client_of(service, defaults={"api_access": True})
    api.set_provider(EntitlementProvider(client, ready_timeout=0))
    yield client
    api.clear_providers()


def test_a_lookup_key_is_a_boolean_flag_for_the_customer_as_targeting_key(flags: AccessClient) -> None:
    flags.poll_once()
    evaluate = api.get_client().get_boolean_details

    granted = evaluate("api_access", False, EvaluationContext(targeting_key="cus_a"))
    refused = evaluate("api_access", True, EvaluationContext(targeting_key="cus_c"))

    assert (granted.value, granted.reason, granted.flag_metadata["stale_seconds"]) == (True, Reason.TARGETING_MATCH, 0)
    assert (refused.value, refused.reason) == (False, Reason.TARGETING_MATCH)


def test_the_flag_says_stale_while_the_service_is_away(flags: AccessClient, service: FakeFeedService) -> None:
    flags.poll_once()
    service.down = True
    flags.poll_once()
    details = api.get_client().get_boolean_details("api_access", False, EvaluationContext(targeting_key="cus_a"))
    assert (details.value, details.reason) == (True, Reason.STALE)


def test_before_the_first_copy_a_flag_is_the_clients_default_or_not_ready(flags: AccessClient) -> None:
    evaluate = api.get_client().get_boolean_details
    defaulted = evaluate("api_access", False, EvaluationContext(targeting_key="cus_a"))
    not_ready = evaluate("sso", False, EvaluationContext(targeting_key="cus_b"))
    assert (defaulted.value, defaulted.reason) == (True, Reason.DEFAULT)
    assert (not_ready.value, not_ready.error_code) == (False, ErrorCode.PROVIDER_NOT_READY)


def test_a_flag_without_a_customer_or_of_another_type_is_an_error(flags: AccessClient) -> None:
    flags.poll_once()
    client = api.get_client()
    assert client.get_boolean_details("api_access", False).error_code == ErrorCode.TARGETING_KEY_MISSING
    text = client.get_string_details("api_access", "x", EvaluationContext(targeting_key="cus_a"))
    assert (text.value, text.error_code) == ("x", ErrorCode.TYPE_MISMATCH)
