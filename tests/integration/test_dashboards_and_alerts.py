"""The alerts and the dashboard are tested like code: promtool checks and unit-tests the rules, every query is
valid PromQL, and every metric they name is exported by the running app after a little traffic."""

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
from sqlalchemy import delete

from entitlement_sync.bootstrap import Container, bootstrap
from entitlement_sync.models import Base
from entitlement_sync.settings import Settings
from entitlement_sync.testing import FakeStripe, active_entitlement
from entitlement_sync.web import create_app
from tests.conftest import READ_TOKEN, post_webhook, settle
from tests.fakes import summary_signal as summary_event  # these tests are of the fetch path

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "entitlement-sync.json"
RUNBOOK = Path(__file__).resolve().parents[2] / "docs" / "runbook.md"
OUR_METRIC = re.compile(r"\bentitlement_sync_[a-z0-9_]+\b")


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


def dashboard_queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


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
def paced(settings: Settings, broker: dramatiq.Broker, fake_stripe: FakeStripe) -> Iterator[Container]:
    """The service as deployed (Prometheus telemetry, Stripe calls paced in this process) with a worker."""
    container = bootstrap(dataclasses.replace(settings, stripe_requests_per_second=500, redis_url=""), broker=broker)
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


def test_every_metric_the_dashboard_and_alerts_name_is_exported(paced, fake_stripe):
    fake_stripe.set_entitlements("cus_dash", [("feat_api", "api_access")])
    fake_stripe.fail_next(429)  # one rate-limited call, retried by the worker
    client = create_app(paced).test_client()
    event = summary_event("cus_dash", [active_entitlement("feat_api", "api_access")])
    assert post_webhook(client, event).status_code == 200
    post_webhook(client, event)
    settle(paced)
    client.get("/v1/customers/cus_dash/entitlements", headers={"Authorization": f"Bearer {READ_TOKEN}"})

    named = {name for expr in dashboard_queries() for name in OUR_METRIC.findall(expr)}
    named |= {name for rule in alert_rules() for name in OUR_METRIC.findall(rule["expr"])}
    assert len(named) > 15
    missing = named - exported_samples(client)
    assert not missing, f"named by the dashboard or alerts but not exported: {sorted(missing)}"
