"""What operators plug into their own monitoring (systemd/monitoring/): the Prometheus alerting rules pass
`promtool check rules` and their unit tests, and every metric the rules and the Grafana dashboard name is one
the service exports."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import support
from prometheus_client.parser import text_string_to_metric_families

from bot.observe.metrics import Metrics
from bot.observe.shadow import ShadowScore

MONITORING = Path(__file__).resolve().parent.parent / "systemd" / "monitoring"
RULES = MONITORING / "progdistill.rules.yml"
RULES_TEST = MONITORING / "progdistill.rules.test.yml"
DASHBOARD = MONITORING / "progdistill.dashboard.json"
SERVICE_DOC = MONITORING.parent.parent / "docs" / "service.md"
METRIC = re.compile(r"\bprogdistill_[a-z0-9_]+")


def promtool() -> str:
    """The promtool binary; under CI=true a missing one fails the test instead of skipping it."""
    found = shutil.which("promtool")
    if found:
        return found
    message = (
        "promtool not found on PATH: the alerting rules are checked with Debian's prometheus package "
        "(`apt-get install -y prometheus`, as .ci/run does)"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def run_promtool(*args: str | Path) -> str:
    """Run promtool with `args`; fails the test with its output when it exits non-zero."""
    proc = subprocess.run(
        [promtool(), *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def exported_names() -> set[str]:
    """Every sample name /metrics carries once each observer has reported something."""
    m = Metrics(stale_s=60.0)
    m.observe_decision(support.decision_record(0), recv_to_decision_us=2.0)
    m.shadow(ShadowScore("BTCUSDT", "edge", window=500, n=40, ic=0.1, vol_ic=0.2, vol_qlike=0.3, regret=0.0))
    m.drift_thresholds({"ret_1": 0.25})
    m.drift("BTCUSDT", {"ret_1": 0.3}, drifting=["ret_1"])
    m.decision_lag("BTCUSDT", 0, lagging=False)
    return {s.name for fam in text_string_to_metric_families(m.render().decode()) for s in fam.samples}


def dashboard_exprs() -> list[str]:
    """Every PromQL expression of the dashboard: panel targets and template variable queries."""
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dash["templating"]["list"] if v["type"] == "query"]
    return exprs


def test_alerting_rules_pass_promtool_check() -> None:
    """`promtool check rules` accepts the shipped rules file."""
    assert "SUCCESS" in run_promtool("check", "rules", RULES)


def test_alerting_rules_pass_their_unit_tests() -> None:
    """`promtool test rules`: each alert fires on its synthetic series when it should and not before."""
    assert "SUCCESS" in run_promtool("test", "rules", RULES_TEST)


def test_every_alert_has_a_unit_test_and_a_line_in_the_docs() -> None:
    """Each alert of the rules file is exercised by the rules' unit tests and named in docs/service.md."""
    alerts = re.findall(r"- alert: (\w+)", RULES.read_text())
    assert len(alerts) == len(set(alerts)) >= 7
    tested = set(re.findall(r"alertname: (\w+)", RULES_TEST.read_text()))
    assert set(alerts) == tested
    doc = SERVICE_DOC.read_text()
    assert [a for a in alerts if a not in doc] == []


def test_rules_and_dashboard_name_only_exported_metrics() -> None:
    """Every progdistill_* name in the rules and in each dashboard expression is a series /metrics carries,
    and every dashboard expression names at least one."""
    exported = exported_names()
    in_rules = set(METRIC.findall(RULES.read_text()))
    assert in_rules
    assert in_rules - exported == set()
    exprs = dashboard_exprs()
    assert len(exprs) >= 20
    for expr in exprs:
        names = set(METRIC.findall(expr))
        assert names, expr
        assert names - exported == set(), expr


def test_dashboard_is_valid_json_with_parseable_promql(tmp_path: Path) -> None:
    """The dashboard is one JSON object with unique panel ids, and promtool parses each of its expressions
    (as recording rules, with the $instance variable substituted)."""
    dash = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    assert dash["uid"] == "progdistill"
    exprs = [e for e in dashboard_exprs() if not e.startswith("label_values(")]
    rules = tmp_path / "dashboard.rules.yml"
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for i, expr in enumerate(exprs):
        lines += [
            f"      - record: dashboard:expr_{i}",
            f"        expr: {json.dumps(expr.replace('$instance', '.*'))}",
        ]
    rules.write_text("\n".join(lines) + "\n")
    assert f"SUCCESS: {len(exprs)} rules found" in run_promtool("check", "rules", rules)
