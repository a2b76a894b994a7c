"""The alerts and the dashboard are tested like code: promtool checks and unit-tests the rules, every query is
valid PromQL, the panels are laid out without overlap, and every metric they name (any name, so a typo in the
prefix counts too) is exported by the running app after a little traffic: a webhook, a sync, a read, the
access feed and an access webhook delivered."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import delete, func, select

from entitlement_sync.bootstrap import Container, bootstrap
from entitlement_sync.models import Base, DeliveryStatus, WebhookDelivery
from entitlement_sync.settings import Settings
from entitlement_sync.settings_parsers import parse_webhook_subscribers
from entitlement_sync.testing import FakeStripe, active_entitlement
from entitlement_sync.web import create_app
from tests.conftest import READ_TOKEN, eventually, post_webhook, settle
from tests.fakes import summary_signal as summary_event  # these tests are of the fetch path
from tests.webhook_subscriber import Subscriber

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "entitlement-sync.json"
RUNBOOK = Path(__file__).resolve().parents[2] / "docs" / "runbook.md"
OUR_METRIC = re.compile(r"\bentitlement_sync_[a-z0-9_]+\b")
# Prometheus' own series, which no app exports: a dashboard may show whether the targets are scraped.
PROMETHEUS_OWN = {"up"}
_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless"}
_PROMQL_WORDS |= {"offset", "inf", "nan"}


def promtool(*arguments: str | Path) -> str:
    """Run promtool; skipped on a machine without it, but never in CI (`.ci/run` installs it)."""
    binary = shutil.which("promtool")
    if binary is None:
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail("promtool is required in CI: apt-get install prometheus")
        pytest.skip("promtool not installed (Debian package `prometheus`); CI runs these checks")
    result = subprocess.run([binary, *map(str, arguments)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_panels() -> list[dict[str, Any]]:
    """Every panel, those inside a collapsed row too (Grafana nests them in the row's `panels`)."""
    top = json.loads(DASHBOARD.read_text())["panels"]
    return [*top, *(inner for panel in top for inner in panel.get("panels", []))]


def dashboard_queries() -> list[str]:
    return [target["expr"] for panel in dashboard_panels() for target in panel.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    """The series an expression selects: every name that is not a function, a keyword, a label or a string."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings: label values, histogram_quantile's none
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges and subqueries' [5m:1m]
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)  # label lists
    names = re.findall(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", expr)
    return {name for name in names if name.lower() not in _PROMQL_WORDS}


def test_metric_names_finds_every_series_and_only_series():
    expr = (
        'sum by (le, subscriber) (rate(entitlment_sync_typo_bucket{outcome="failed", x=~"a|b"}[5m])) > 0'
        " or on() vector(0) and max(up) unless histogram_quantile(0.5, entitlement_sync_x offset 1h)"
    )
    assert metric_names(expr) == {"entitlment_sync_typo_bucket", "up", "entitlement_sync_x"}


def test_the_alert_rules_pass_promtool_check():
    assert "SUCCESS" in promtool("check", "rules", RULES)


def test_each_alert_fires_on_its_synthetic_series():
    assert "SUCCESS" in promtool("test", "rules", DEPLOY / "prometheus" / "alerts_test.yml")


def test_the_example_scrape_config_passes_promtool_check():
    promtool("check", "config", DEPLOY / "prometheus" / "prometheus.yml")


def test_every_dashboard_query_is_valid_promql(tmp_path):
    # promtool validates expressions in rule files: wrap each panel's query in a recording rule.
    rules = [{"record": f"dashboard:query_{n}", "expr": expr} for n, expr in enumerate(dashboard_queries())]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert f"SUCCESS: {len(rules)} rules found" in promtool("check", "rules", path)


def test_the_panels_have_unique_ids_and_do_not_overlap():
    panels = dashboard_panels()
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]
    for panel in panels:
        assert panel["type"] == "row" or panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert [target["refId"] for target in panel.get("targets", [])] == [
            chr(ord("A") + n) for n in range(len(panel.get("targets", [])))
        ]


def test_every_alert_has_a_unit_test_and_a_runbook_section():
    alerts = {rule["alert"] for rule in alert_rules() if "alert" in rule}
    tests = yaml.safe_load((DEPLOY / "prometheus" / "alerts_test.yml").read_text())["tests"]
    tested = {case["alertname"] for test in tests for case in test.get("alert_rule_test", [])}
    assert alerts == tested
    headings = {line.lstrip("#").strip() for line in RUNBOOK.read_text().splitlines() if line.startswith("### ")}
    assert alerts <= headings
    for rule in alert_rules():
        if "alert" in rule:
            assert rule["annotations"]["runbook"] == f"docs/runbook.md#{rule['alert'].lower()}"


@pytest.fixture
def subscriber() -> Iterator[Subscriber]:
    with Subscriber() as subscriber:
        yield subscriber


@pytest.fixture
def paced(
    settings: Settings, broker: dramatiq.Broker, fake_stripe: FakeStripe, subscriber: Subscriber
) -> Iterator[Container]:
    """The service as deployed (Prometheus telemetry, Stripe calls paced in this process, an access webhook
    subscriber) with a worker."""
    configured = dataclasses.replace(
        settings,
        stripe_requests_per_second=500,
        redis_url="",
        access_webhooks=parse_webhook_subscribers(subscriber.entry),
    )
    container = bootstrap(configured, broker=broker)
    with container.engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(delete(table))
    worker = dramatiq.Worker(container.broker, worker_timeout=50, worker_threads=2)
    worker.start()
    yield container
    worker.stop()
    container.close()


def exported_samples(client: Any) -> set[str]:
    response = client.get("/metrics")
    assert response.status_code == 200
    families = text_string_to_metric_families(response.get_data(as_text=True))
    return {sample.name for family in families for sample in family.samples}


def test_every_metric_the_dashboard_and_alerts_name_is_exported(paced, fake_stripe, subscriber):
    fake_stripe.set_entitlements("cus_dash", [("feat_api", "api_access")])
    fake_stripe.fail_next(429)  # one rate-limited call, retried by the worker
    client = create_app(paced).test_client()
    event = summary_event("cus_dash", [active_entitlement("feat_api", "api_access")])
    assert post_webhook(client, event).status_code == 200
    post_webhook(client, event)
    settle(paced)
    auth = {"Authorization": f"Bearer {READ_TOKEN}"}
    client.get("/v1/customers/cus_dash/entitlements", headers=auth)
    # The grant is on the feed and posted to the subscriber by the worker (the delivery wait is observed then).
    assert client.get("/v1/access-changes?after=0", headers=auth).get_json()["changes"]
    assert eventually(lambda: delivered(paced) == 1)

    named = series_the_app_must_export()
    assert len(named) > 25 and "entitlement_sync_access_feed_changes_total" in named
    assert named >= {name for expr in dashboard_queries() for name in OUR_METRIC.findall(expr)}
    missing = named - exported_samples(client)
    assert not missing, f"named by the dashboard or alerts but not exported: {sorted(missing)}"


def series_the_app_must_export() -> set[str]:
    """Every series a panel or a rule selects, but Prometheus' own and those recorded by a rule (whose own
    expressions are in the set)."""
    named = {name for expr in dashboard_queries() for name in metric_names(expr)}
    named |= {name for rule in alert_rules() for name in metric_names(rule["expr"])}
    recorded = {rule["record"] for rule in alert_rules() if "record" in rule}
    return named - PROMETHEUS_OWN - recorded


def delivered(container: Container) -> int:
    with container.new_session() as session:
        statement = select(func.count()).where(WebhookDelivery.status == DeliveryStatus.DELIVERED)
        return int(session.scalar(statement) or 0)
