"""The read API for internal services (HTTP with bearer tokens) and the Python API."""

import gc
import os
import threading
from dataclasses import replace
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy import JSON, Boolean, create_engine, text
from sqlalchemy import event as sa_event

from entitlement_sync.bootstrap import bootstrap
from entitlement_sync.db import PoolOptions, create_db_engine
from entitlement_sync.errors import StorageUnavailable
from entitlement_sync.kept_connections import ThreadConnections
from entitlement_sync.models import UTCDateTime, utcnow
from entitlement_sync.reads import Read
from entitlement_sync.web import create_app
from tests.conftest import READ_TOKEN, TEST_DATABASE_URL

AUTH = {"Authorization": f"Bearer {READ_TOKEN}"}
on_postgres = pytest.mark.skipif(not TEST_DATABASE_URL, reason="PostgreSQL only: a backend to terminate")


def synced(container, fake_stripe, customer, features):
    fake_stripe.set_entitlements(customer, features)
    container.syncer.sync_customer(customer)


def test_requests_without_a_valid_token_are_refused(client):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {READ_TOKEN}"}):
        response = client.get("/v1/customers/cus_1/entitlements", headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_with_no_tokens_configured_every_request_is_refused_and_says_why(settings, broker):
    container = bootstrap(replace(settings, access_api_tokens=()), broker=broker)
    response = create_app(container).test_client().get("/v1/customers/cus_1/entitlements", headers=AUTH)
    assert response.status_code == 401
    assert "no ACCESS_API_TOKENS" in response.json["error"]
    container.close()


def test_a_customers_entitlements_are_listed(client, container, fake_stripe):
    synced(container, fake_stripe, "cus_1", [("feat_api", "api_access"), ("feat_ai", "ai_assistant")])
    body = client.get("/v1/customers/cus_1/entitlements", headers=AUTH).json
    assert body["customer"] == "cus_1"
    ids = {item["feature"]: item["id"] for item in fake_stripe.active_entitlements("cus_1")}
    assert [(item["lookup_key"], item["feature"], item["entitlement"]) for item in body["entitlements"]] == [
        ("ai_assistant", "feat_ai", ids["feat_ai"]),
        ("api_access", "feat_api", ids["feat_api"]),
    ]
    assert {item["reason"] for item in body["entitlements"]} == {"stripe_entitlement"}
    assert body["entitlements"][0]["sources"] == [{"kind": "entitlement", "id": ids["feat_ai"], "detail": "feat_ai"}]
    assert body["synced_at"].endswith("+00:00")
    assert (body["refused"], body["stale"]) == ([], False)


def test_one_lookup_key_answers_granted_or_not(client, container, fake_stripe):
    synced(container, fake_stripe, "cus_1", [("feat_api", "api_access")])
    granted = client.get("/v1/customers/cus_1/entitlements/api_access", headers=AUTH).json
    refused = client.get("/v1/customers/cus_1/entitlements/sso", headers=AUTH).json
    assert (granted["granted"], refused["granted"]) == (True, False)
    assert granted["synced_at"] is not None and granted["synced_at"] == refused["synced_at"]
    assert (granted["reason"], refused["reason"]) == ("stripe_entitlement", "no_entitlement")
    assert granted["sources"][0]["detail"] == "feat_api" and refused["sources"] == []
    assert granted["stale"] is refused["stale"] is False


def test_a_customer_never_synced_has_no_sync_time_and_nothing_granted(client, container):
    listing = client.get("/v1/customers/cus_unknown/entitlements", headers=AUTH).json
    one = client.get("/v1/customers/cus_unknown/entitlements/api_access", headers=AUTH).json
    assert listing == {"customer": "cus_unknown", "entitlements": [], "refused": [], "synced_at": None, "stale": False}
    assert one == {
        "customer": "cus_unknown",
        "lookup_key": "api_access",
        "granted": False,
        "synced_at": None,
        "reason": "never_synced",
        "sources": [],
        "stale": False,
    }


def test_a_customer_synced_to_nothing_is_told_apart_from_one_never_synced(client, container, fake_stripe):
    synced(container, fake_stripe, "cus_empty", [])
    listing = client.get("/v1/customers/cus_empty/entitlements", headers=AUTH).json
    assert listing["entitlements"] == [] and listing["synced_at"] is not None


def test_a_customer_id_in_the_path_is_decoded_as_flask_decodes_it(client, container):
    assert client.get("/v1/customers/cus_%C3%A9t%C3%A9/entitlements", headers=AUTH).json["customer"] == "cus_été"
    one = client.get("/v1/customers/cus_%C3%A9t%C3%A9/entitlements/api%5Faccess", headers=AUTH).json
    assert (one["customer"], one["lookup_key"]) == ("cus_été", "api_access")


def test_the_plain_read_path_answers_as_the_blueprints_views_would(client, container, fake_stripe):
    """create_app answers the read API's GETs in plain WSGI (web/access.py); the blueprint alone must agree."""
    from flask import Flask

    from entitlement_sync.web.access import ReadRoute, access

    view_only = Flask("view_only")
    view_only.extensions["entitlement_sync"] = container
    view_only.register_blueprint(access)
    assert isinstance(create_app(container, "internal").wsgi_app, ReadRoute)
    synced(container, fake_stripe, "cus_1", [("feat_api", "api_access")])
    container.overrides.deny("cus_1", "reports", None, "abuse", "bo")
    asked = [
        ("/v1/customers/cus_1/entitlements", AUTH),
        ("/v1/customers/cus_1/entitlements/api_access", AUTH),
        ("/v1/customers/cus_1/entitlements/reports", AUTH),
        ("/v1/customers/cus_1/entitlements", {}),
        ("/v1/customers/cus_1/entitlements/api_access", {"Authorization": "Bearer wrong"}),
    ]
    answers = [
        [
            (answer.status_code, answer.json, answer.content_type, answer.headers.get("WWW-Authenticate"))
            for answer in (each.get(path, headers=headers) for path, headers in asked)
        ]
        for each in (client, view_only.test_client())
    ]
    assert [status for status, *_ in answers[0]] == [200, 200, 200, 401, 401]
    assert answers[0][2][1]["reason"] == "manual_denial"
    assert answers[0] == answers[1]


def test_what_the_plain_read_path_passes_on_is_answered_by_the_app(client, container):
    head = client.head("/v1/customers/cus_1/entitlements", headers=AUTH)
    assert (head.status_code, head.content_type) == (200, "application/json")
    assert client.head("/v1/customers/cus_1/entitlements").status_code == 401
    for path in ("/v1/customers/cus_1/entitlements/", "/v1/customers/cus_1/other", "/v1/customers//entitlements"):
        assert client.get(path, headers=AUTH).status_code == 404, path


def test_the_python_api_reads_the_same_table(container, fake_stripe, database_url):
    from entitlement_sync import AccessReader

    synced(container, fake_stripe, "cus_1", [("feat_api", "api_access")])
    reader = AccessReader.connect(database_url)
    assert reader.has_access("cus_1", "api_access") is True
    assert reader.has_access("cus_1", "ai_assistant") is False
    assert reader.entitlements_for("cus_1").lookup_keys == {"api_access"}


def test_grants_made_here_are_listed_and_denials_are_refused_with_why(client, container, fake_stripe):
    synced(container, fake_stripe, "cus_1", [("feat_api", "api_access")])
    until = utcnow() + timedelta(days=1)
    grant = container.overrides.grant("cus_1", "reports", until, "pilot", "ana")
    denial = container.overrides.deny("cus_1", "api_access", None, "abuse", "bo")
    body = client.get("/v1/customers/cus_1/entitlements", headers=AUTH).json
    assert body["entitlements"] == [
        {
            "lookup_key": "reports",
            "feature": None,
            "entitlement": None,
            "reason": "manual_grant",
            "sources": [{"kind": "grant", "id": str(grant.id), "detail": "pilot"}],
            "since": body["entitlements"][0]["since"],
        }
    ]
    assert [(item["lookup_key"], item["reason"]) for item in body["refused"]] == [("api_access", "manual_denial")]
    one = client.get("/v1/customers/cus_1/entitlements/api_access", headers=AUTH).json
    assert (one["granted"], one["reason"], one["sources"][0]["id"]) == (False, "manual_denial", str(denial.id))


def test_check_returns_the_decision_as_a_value(container, fake_stripe, database_url):
    from entitlement_sync import AccessDecision, AccessReader

    synced(container, fake_stripe, "cus_1", [("feat_api", "api_access")])
    decision = AccessReader.connect(database_url).check("cus_1", "api_access")
    assert isinstance(decision, AccessDecision)
    assert (decision.granted, decision.reason, decision.stale) == (True, "stripe_entitlement", False)
    assert decision.since is not None and decision.synced_at is not None


@on_postgres
def test_a_reading_thread_keeps_one_connection_and_a_dropped_one_fails_one_read_then_is_replaced(container):
    """On PostgreSQL each reading thread keeps its connection between reads. When the server drops it (a
    restart, a failover), that read is answered as unavailable (a 503), and the next one reads again."""
    reads = ThreadConnections(container.engine)
    first = reads.rows(BACKEND, {})[0][0]
    assert reads.rows(BACKEND, {})[0][0] == first  # the same connection
    with container.engine.connect() as other:
        other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
    with pytest.raises(StorageUnavailable):
        reads.rows(BACKEND, {})
    assert reads.rows(BACKEND, {})[0][0] != first
    reads.close()


@on_postgres
def test_a_connection_dropped_before_its_setup_is_unavailable_not_a_bug(container):
    """The server can go away between a kept connection's connect and its setup (seen when PostgreSQL stopped
    mid-run: a 500 among the 503s). That read is unavailable too, and the next one connects again."""
    reads = ThreadConnections(container.engine)
    dropped: list[int] = []

    def dropped_on_first_checkout(dbapi_connection: Any, *_: Any) -> None:
        if not dropped:
            dropped.append(dbapi_connection.info.backend_pid)
            with container.engine.connect() as other:
                other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": dropped[0]})

    sa_event.listen(reads._engine.pool, "checkout", dropped_on_first_checkout)
    try:
        with pytest.raises(StorageUnavailable):
            reads.rows(BACKEND, {})
        assert reads.rows(BACKEND, {})[0][0] != dropped[0]
    finally:
        sa_event.remove(reads._engine.pool, "checkout", dropped_on_first_checkout)
        reads.close()


def test_a_flag_read_answers_true_false_or_none_without_a_row(container):
    reads = ThreadConnections(container.engine)
    assert reads.flag(SAME, {"a": "x", "b": "x"}) is True
    assert reads.flag(SAME, {"a": "x", "b": "y"}) is False
    assert reads.flag(Read("SELECT :a = :a AS same WHERE :a = 'never'"), {"a": "x"}) is None
    reads.close()


@on_postgres
def test_a_flag_read_on_a_dropped_connection_fails_once_then_reads_again(container):
    reads = ThreadConnections(container.engine)
    assert reads.flag(SAME, {"a": "x", "b": "x"}) is True  # prepared on the kept connection
    with container.engine.connect() as other:
        other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": reads.rows(BACKEND, {})[0][0]})
    with pytest.raises(StorageUnavailable):
        reads.flag(SAME, {"a": "x", "b": "x"})
    assert reads.flag(SAME, {"a": "x", "b": "y"}) is False  # prepared again on the fresh one
    reads.close()


@on_postgres
def test_a_flag_read_past_the_statement_timeout_is_unavailable_and_a_wrong_one_is_a_bug(database_url):
    reads = ThreadConnections(create_db_engine(database_url, PoolOptions(statement_timeout_seconds=0.2)))
    with pytest.raises(StorageUnavailable):
        reads.flag(Read("SELECT true FROM pg_sleep(CAST(:seconds AS float))"), {"seconds": "2"})
    with pytest.raises(psycopg.errors.UndefinedColumn):
        reads.flag(Read("SELECT no_such_column WHERE :a = :a"), {"a": "x"})
    assert reads.flag(SAME, {"a": "x", "b": "x"}) is True
    reads.close()


@on_postgres
def test_a_forked_child_reads_on_a_connection_of_its_own_and_leaves_the_parents_alone(container):
    """gunicorn and Dramatiq fork after import: a child must never talk on its parent's socket."""
    reads = ThreadConnections(container.engine)
    parents = reads.rows(BACKEND, {})[0][0]
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.write(write_end, str(reads.rows(BACKEND, {})[0][0]).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    childs = int(os.read(read_end, 64) or b"0")
    os.waitpid(child, 0)
    assert childs not in (0, parents)
    assert reads.rows(BACKEND, {})[0][0] == parents
    reads.close()


def test_a_thread_that_ends_hands_its_connection_back(container):
    reads = ThreadConnections(container.engine)
    thread = threading.Thread(target=reads.rows, args=(ONE, {}))
    thread.start()
    thread.join()
    gc.collect()
    assert reads.kept() == 0
    reads.rows(ONE, {})
    assert reads.kept() == 1
    reads.close()


def test_reads_of_their_own_connections_come_typed_as_sqlalchemy_types_them(container):
    """SQLite hands back text and integers; a read types them as PostgreSQL's driver does."""
    reads = ThreadConnections(container.engine)
    typed = Read(
        "SELECT :moment AS moment, :document AS document, :flag AS flag, :plain AS plain",
        {"moment": UTCDateTime(), "document": JSON(), "flag": Boolean()},
    )
    moment = "2026-11-29 13:48:40.107087" if container.engine.dialect.name == "sqlite" else utcnow()
    params = {"moment": moment, "document": '{"a": [1]}', "flag": True, "plain": 7}
    if container.engine.dialect.name == "postgresql":
        typed = Read(typed.sql.replace(":document", "CAST(:document AS json)"), typed.types)
    [(when, document, flag, plain)] = reads.rows(typed, params)
    assert when.tzinfo is not None and when.utcoffset() == timedelta(0)
    assert (document, flag, plain) == ({"a": [1]}, True, 7)
    reads.close()


def test_an_in_memory_sqlite_database_is_read_through_the_engine_which_alone_has_it():
    assert not ThreadConnections.suit(create_engine("sqlite://"))
    assert ThreadConnections.suit(create_engine("sqlite:////tmp/some.db"))


BACKEND = Read("SELECT pg_backend_pid()")
ONE = Read("SELECT 1")
SAME = Read("SELECT :a = :b AS same")
