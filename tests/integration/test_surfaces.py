"""Public and internal surfaces apart; /readyz that names what is down and nothing else; /metrics that never
counts the inbox."""

from dataclasses import replace

import pytest
from click.testing import CliRunner
from sqlalchemy import event, func, select, update

from entitlement_sync import store
from entitlement_sync.bootstrap import bootstrap
from entitlement_sync.cli import main
from entitlement_sync.cli.run import gunicorn_arguments
from entitlement_sync.db import latest_revision, transaction, upgrade
from entitlement_sync.models import EventStatus, StripeEvent
from entitlement_sync.tasks import build_stub_broker
from entitlement_sync.testing import active_entitlement, summary_event
from entitlement_sync.web import create_app
from entitlement_sync.web.serving import PortDispatcher
from tests.conftest import READ_TOKEN, post_webhook, settle

AUTH = {"Authorization": f"Bearer {READ_TOKEN}"}
INTERNAL_ONLY = [
    "/v1/customers/cus_1/entitlements",
    "/v1/customers/cus_1/entitlements/api_access",
    "/metrics",
    "/readyz",
]


def a_summary(customer="cus_1"):
    return summary_event(customer, [active_entitlement("feat_api", "api_access")])


def test_the_public_surface_serves_webhooks_and_healthz_and_nothing_else(container):
    public = create_app(container, "public").test_client()
    assert post_webhook(public, a_summary()).status_code == 200
    assert public.get("/healthz").status_code == 200
    for path in INTERNAL_ONLY:
        assert public.get(path, headers=AUTH).status_code == 404, path


def test_the_internal_surface_serves_reads_metrics_and_probes_but_no_webhooks(container):
    internal = create_app(container, "internal").test_client()
    for path in [*INTERNAL_ONLY, "/healthz"]:
        assert internal.get(path, headers=AUTH).status_code == 200, path
    assert post_webhook(internal, a_summary()).status_code == 404


class _Socket:
    def __init__(self, port):
        self.port = port
        self.asked = 0

    def getsockname(self):
        self.asked += 1
        return ("127.0.0.1", self.port)


def test_requests_are_routed_by_the_port_they_arrived_on_never_by_the_host_header(container):
    public, internal = create_app(container, "public"), create_app(container, "internal")
    dispatcher = PortDispatcher({8001: internal}, default=public)

    def status(local_port, host):
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/metrics", "SERVER_NAME": host, "SERVER_PORT": "8001"}
        environ |= {"HTTP_HOST": f"{host}:8001", "wsgi.url_scheme": "http", "wsgi.input": None}
        if local_port is not None:
            environ["gunicorn.socket"] = _Socket(local_port)
        answer = []
        dispatcher(environ, lambda code, headers, exc_info=None: answer.append(code))
        return answer[0]

    assert status(8001, "internal").startswith("200")
    assert status(8000, "evil").startswith("404")  # Host says 8001; the connection came in on 8000
    assert status(None, "evil").startswith("404")  # a server that does not say: the public app


def test_a_kept_alive_connection_has_its_port_asked_once(container):
    public, internal = create_app(container, "public"), create_app(container, "internal")
    dispatcher = PortDispatcher({8001: internal}, default=public)
    connection, answers = _Socket(8001), []
    for _ in range(3):
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/metrics", "SERVER_NAME": "x", "SERVER_PORT": "8001"}
        environ |= {"wsgi.url_scheme": "http", "wsgi.input": None, "gunicorn.socket": connection}
        dispatcher(environ, lambda code, headers, exc_info=None: answers.append(code))
    assert [code[:3] for code in answers] == ["200"] * 3
    assert connection.asked == 1


def test_serve_binds_both_ports_with_threaded_workers_and_refuses_one_port_for_both():
    arguments = gunicorn_arguments("0.0.0.0", 8000, 8001, workers=2, threads=8)
    assert "0.0.0.0:8000" in arguments and "0.0.0.0:8001" in arguments
    assert arguments[arguments.index("--worker-class") + 1] == "gthread"
    assert "--reuse-port" in arguments  # a socket per process: kept-alive connections spread over every process
    assert arguments[-1] == "entitlement_sync.web.serving:serve_app(internal_port=8001, body_read_seconds=10.0)"
    refused = CliRunner().invoke(main, ["serve", "--port", "8000", "--internal-port", "8000"])
    assert refused.exit_code == 2 and "must differ" in refused.output


def test_readyz_names_the_database_as_down_without_its_host_user_or_error(settings, broker):
    dsn = "postgresql+psycopg://secret_user:secret_pw@127.0.0.1:1/secret_db"
    down = bootstrap(replace(settings, database_url=dsn), broker=broker)
    internal = create_app(down, "internal").test_client()
    response = internal.get("/readyz")
    assert response.status_code == 503
    assert response.json["checks"]["database"] == "unavailable"
    for secret in ("secret_user", "secret_pw", "secret_db", "127.0.0.1", "5432", "connection"):
        assert secret not in response.get_data(as_text=True)
    assert internal.get("/v1/customers/cus_1/entitlements", headers=AUTH).status_code == 503
    assert internal.get("/v1/customers/cus_1/entitlements/api_access", headers=AUTH).status_code == 503
    down.close()


@pytest.mark.parametrize("revision", ["0003", None])
def test_readyz_fails_while_the_schema_is_not_at_the_latest_migration(settings, tmp_path, revision):
    url = f"sqlite:///{tmp_path / 'behind.db'}"
    if revision:
        upgrade(url, revision)
    behind = bootstrap(replace(settings, database_url=url), broker=build_stub_broker())
    response = create_app(behind, "internal").test_client().get("/readyz")
    assert response.status_code == 503
    expected = f"schema at {revision or 'nothing'}, code needs {latest_revision()}"
    assert response.json["checks"]["database"].startswith(expected)
    upgrade(url)
    assert create_app(behind, "internal").test_client().get("/readyz").status_code == 200
    behind.close()


def true_counts(container):
    with container.new_session() as session:
        rows = session.execute(select(StripeEvent.status, func.count()).group_by(StripeEvent.status))
        return {status: count for status, count in rows}


def kept_counts(container):
    with container.new_session() as session:
        return {status: count for status, count in store.counts.event_counts(session).items() if count}


def test_the_kept_counts_follow_every_insert_status_change_and_delete(client, container, worker):
    for n in range(6):
        post_webhook(client, a_summary(f"cus_{n}"))
    post_webhook(client, {**a_summary(), "type": "invoice.paid"})
    settle(container)
    with transaction(container.new_session) as session:  # a batch moving several rows at once
        session.execute(
            update(StripeEvent).where(StripeEvent.customer_id.in_(["cus_1", "cus_2"])).values(status="failed")
        )
    assert kept_counts(container) == true_counts(container) == {"processed": 4, "failed": 2, "ignored": 1}
    with transaction(container.new_session) as session:
        session.execute(StripeEvent.__table__.delete().where(StripeEvent.customer_id == "cus_3"))
        assert store.counts.fold_event_counts(session) >= 0
    assert kept_counts(container) == true_counts(container) == {"processed": 3, "failed": 2, "ignored": 1}


def test_a_scrape_reads_the_kept_counts_and_never_counts_the_inbox(client, container):
    for n in range(3):
        post_webhook(client, a_summary(f"cus_{n}"))
    statements = []
    listener = lambda *args: statements.append(args[2])  # noqa: E731  (conn, cursor, statement, …)
    event.listen(container.engine, "before_cursor_execute", listener)
    try:
        text = create_app(container, "internal").test_client().get("/metrics").get_data(as_text=True)
    finally:
        event.remove(container.engine, "before_cursor_execute", listener)
    assert 'entitlement_sync_events{status="queued"} 3.0' in text
    touching_the_inbox = [statement for statement in statements if "stripe_events" in statement]
    assert touching_the_inbox and all("min(stripe_events.received_at)" in s for s in touching_the_inbox)
    assert not any("count(" in statement.lower() for statement in touching_the_inbox)


def test_an_unknown_status_in_the_counts_is_reported_too(client, container):
    post_webhook(client, a_summary())
    with transaction(container.new_session) as session:
        session.execute(update(StripeEvent).values(status="superseded"))
    text = create_app(container, "internal").test_client().get("/metrics").get_data(as_text=True)
    assert 'entitlement_sync_events{status="superseded"} 1.0' in text
    assert f'entitlement_sync_events{{status="{EventStatus.QUEUED}"}} 0.0' in text
