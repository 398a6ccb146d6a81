"""The alert rules and dashboards shipped in deploy/ (issue 20), checked offline with Prometheus's own ``promtool``.

- ``promtool check rules`` accepts the rule file, and ``promtool test rules`` passes its unit tests
  (deploy/prometheus/edgepair.rules.test.yml), which test every alert both firing and not firing;
- a rule file with one threshold broken fails those unit tests (the tests can fail);
- every ``edgepair_*`` metric the rules and dashboards read is one the node exports (``NodeMetrics``), or a
  recording rule of the rule file;
- every panel query of both Grafana dashboards is valid PromQL: each is wrapped as a recording rule and the file
  given to ``promtool check rules`` (promtool has no offline query parser of its own);
- every alert has its section in docs/runbook.md.

Needs Debian's ``prometheus`` package (``/usr/bin/promtool``; in the Makefile's APT_PACKAGES).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "edgepair.rules.yml"
RULE_TESTS = REPO / "deploy" / "prometheus" / "edgepair.rules.test.yml"
DASHBOARDS = sorted((REPO / "deploy" / "grafana").glob("*.json"))
RUNBOOK = REPO / "docs" / "runbook.md"
PROMTOOL = shutil.which("promtool")

needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian: apt-get install prometheus; make setup does)"
)


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def alerts() -> list[str]:
    return [r["alert"] for r in rules() if "alert" in r]


def panel_queries() -> list[tuple[str, str, str]]:
    """(dashboard uid, panel title + refId, expression) of every panel query of every dashboard."""
    out = []
    for path in DASHBOARDS:
        dash = json.loads(path.read_text())
        for p in dash["panels"]:
            for t in p["targets"]:
                out.append((dash["uid"], f"{p['title']} {t['refId']}", t["expr"]))
    return out


def as_promql(expr: str, store: str = "s1") -> str:
    """A panel's query with Grafana's variables given values, as Prometheus would receive it."""
    return expr.replace("$__rate_interval", "5m").replace("$__range", "1h").replace("$store", store)


def test_dashboards_exist_for_a_store_and_a_fleet() -> None:
    assert [p.name for p in DASHBOARDS] == ["edgepair-fleet.json", "edgepair-store.json"]
    assert (len(panel_queries()), len(alerts())) == (33, 13)


@needs_promtool
def test_promtool_accepts_the_rule_file() -> None:
    done = promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 15 rules found" in done.stdout


@needs_promtool
def test_every_alert_passes_its_unit_tests() -> None:
    done = promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    doc = yaml.safe_load(RULE_TESTS.read_text())
    firing: set[str] = set()
    silent: set[str] = set()
    for t in doc["tests"]:
        for a in t.get("alert_rule_test", []):
            (firing if a["exp_alerts"] else silent).add(a["alertname"])
    assert sorted(firing) == sorted(alerts())
    assert sorted(silent) == sorted(alerts())


@needs_promtool
@pytest.mark.parametrize(
    ("alert", "old", "new"),
    [
        ("EdgepairCoverageLow", "ratio_1h < 0.95", "ratio_1h < 0.5"),
        ("EdgepairNodeDown", 'up{job="edgepair"} == 0', 'up{job="edgepair"} == 2'),
        ("EdgepairCameraNotProcessing", "for: 3m", "for: 30m"),
    ],
)
def test_a_broken_rule_fails_the_unit_tests(tmp_path: Path, alert: str, old: str, new: str) -> None:
    text = RULES.read_text()
    assert text.count(old) == 1, old
    (tmp_path / RULES.name).write_text(text.replace(old, new))
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    done = promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert done.returncode == 1, done.stdout
    assert f"alertname: {alert}, time:" in done.stdout + done.stderr


def exported_metrics() -> set[str]:
    from cluster.node import NodeMetrics

    return {m.name + ("_total" if m.type == "counter" else "") for m in NodeMetrics().registry.collect()} | {
        "edgepair_loop_restarts_total"  # a Gauge named *_total: prometheus_client reports it without the suffix
    }


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(edgepair(?::[a-z_0-9]+:[a-z_0-9]+|_[a-z_0-9]+))\b", expr))


def test_rules_and_dashboards_read_only_metrics_the_node_exports() -> None:
    recorded = {r["record"] for r in rules() if "record" in r}
    used = set().union(*(metric_names(r["expr"]) for r in rules()), *(metric_names(e) for *_, e in panel_queries()))
    unknown = used - exported_metrics() - recorded
    assert unknown == set()
    # and every metric of the node is on the store dashboard
    store = json.loads((REPO / "deploy" / "grafana" / "edgepair-store.json").read_text())
    on_store = set().union(*(metric_names(t["expr"]) for p in store["panels"] for t in p["targets"]))
    assert exported_metrics() - on_store == {"edgepair_fencing_token", "edgepair_camera_fps"}


@needs_promtool
def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    queries = [as_promql(expr) for _, _, expr in panel_queries()]
    group = [{"record": f"dashboard:query_{i}:check", "expr": expr} for i, expr in enumerate(queries)]
    path = tmp_path / "dashboards.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": group}]}))
    done = promtool("check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(group)} rules found" in done.stdout


@needs_promtool
def test_a_broken_dashboard_query_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "broken.rules.yml"
    broken = {"record": "a:b:c", "expr": "sum by (x (up)"}
    path.write_text(yaml.safe_dump({"groups": [{"name": "d", "rules": [broken]}]}))
    done = promtool("check", "rules", str(path))
    assert done.returncode == 1
    assert "parse error" in done.stdout + done.stderr


def test_every_alert_has_a_runbook_section() -> None:
    text = RUNBOOK.read_text()
    headings = re.findall(r"^### (Edgepair\w+)$", text, re.M)
    assert headings == alerts()
    for r in rules():
        if "alert" in r:
            assert r["annotations"]["runbook_url"] == f"docs/runbook.md#{r['alert'].lower()}"


ROLE = REPO / "deploy" / "ansible" / "roles" / "monitoring"


def render_role_template(name: str, **overrides: Any) -> str:
    """The monitoring role's template ``name`` for the example inventory's witness (plain Jinja2, as Ansible does)."""
    import jinja2

    inv = yaml.safe_load((REPO / "deploy" / "ansible" / "inventories" / "example" / "hosts.yml").read_text())
    ws = inv["all"]["children"]["workstations"]["hosts"]
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    values = {
        **defaults,
        "monitoring_metrics_port": 9101,
        "monitoring_pki_dir": "/etc/prometheus/edgepair-pki",
        "edgepair_store": {"id": "store-42"},
        "groups": {"workstations": list(ws)},
        "hostvars": ws,
        "inventory_hostname": "witness1",
        **overrides,
    }
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.from_string((ROLE / "templates" / name).read_text()).render(**values)


@needs_promtool
def test_the_roles_prometheus_config_scrapes_both_workstations_over_mutual_tls(tmp_path: Path) -> None:
    text = render_role_template("prometheus.yml.j2")
    doc = yaml.safe_load(text)
    (job,) = [j for j in doc["scrape_configs"] if j["job_name"] == "edgepair"]
    assert job["scheme"] == "https"
    assert job["tls_config"] == {
        "ca_file": "/etc/prometheus/edgepair-pki/ca.crt",
        "cert_file": "/etc/prometheus/edgepair-pki/prometheus.crt",
        "key_file": "/etc/prometheus/edgepair-pki/prometheus.key",
    }
    assert job["static_configs"] == [
        {"targets": ["10.0.0.11:9101"], "labels": {"store": "store-42", "node": "ws-a"}},
        {"targets": ["10.0.0.12:9101"], "labels": {"store": "store-42", "node": "ws-b"}},
    ]
    path = tmp_path / "prometheus.yml"
    path.write_text(text)
    done = promtool("check", "config", "--syntax-only", str(path))
    assert done.returncode == 0, done.stdout + done.stderr


AMTOOL = shutil.which("amtool")


@pytest.mark.skipif(AMTOOL is None, reason="amtool not installed (Debian: apt-get install prometheus-alertmanager)")
@pytest.mark.parametrize("webhook", ["", "https://oncall.example/hook"])
def test_the_roles_alertmanager_config_is_valid(tmp_path: Path, webhook: str) -> None:
    text = render_role_template("alertmanager.yml.j2", monitoring_webhook_url=webhook)
    doc = yaml.safe_load(text)
    assert doc["route"]["receiver"] == ("webhook" if webhook else "local")
    hooks = [c["url"] for r in doc["receivers"] for c in r.get("webhook_configs", [])]
    assert hooks == ([webhook] if webhook else [])
    path = tmp_path / "alertmanager.yml"
    path.write_text(text)
    assert AMTOOL is not None
    done = subprocess.run([AMTOOL, "check-config", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
