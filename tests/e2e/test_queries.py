"""Every documented query in deploy/queries/ and every Grafana panel query, run against the real
Loki, Prometheus and Jaeger after the attack scenario went through the Collector.

Documented queries must not only parse: each one answers its question on the scenario's data
(non-empty), except PromQL over the processor service's own counters, which this test does not
run (they must execute without error)."""

from __future__ import annotations

import json
import re
from string import Template
from typing import Any

import pytest
import yaml

from tests.e2e.scenario import KUBE_API_ADDRESS, Scenario
from tests.support.polling import wait_until
from tests.support.stack import ROOT, Jaeger, Loki, Prometheus, StackError

pytestmark = pytest.mark.e2e

QUERIES = yaml.safe_load((ROOT / "deploy" / "queries" / "queries.yaml").read_text())["queries"]
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))


def params(s: Scenario) -> dict[str, str]:
    return {"namespace": s.namespace, "rule": s.rule_reverse_shell, "trace_id": s.trace_id_hex,
            "service": s.service, "kube_api_address": KUBE_API_ADDRESS}


def fill(value: Any, values: dict[str, str]) -> Any:
    if isinstance(value, str):
        return Template(value).safe_substitute(values)
    if isinstance(value, dict):
        return {k: fill(v, values) for k, v in value.items()}
    return value


def run(entry: dict[str, Any], query: Any, loki: Loki, prometheus: Prometheus, jaeger: Jaeger) -> int:
    """Result count of one query (raises StackError on a query error)."""
    kind = entry["kind"]
    if kind == "logql":
        data = loki.query_range(query)
        return sum(len(r.get("values", [])) for r in data["result"])
    if kind == "promql":
        return len(prometheus.query(query))
    if kind == "jaeger":
        if "trace_id" in query:
            return len(jaeger.trace(query["trace_id"]))
        return len(jaeger.search(query["service"], query["tags"]))
    raise AssertionError(f"unknown kind {kind}")


def test_queries_file_is_complete() -> None:
    questions = {q["question"].split(" (")[0] for q in QUERIES}
    assert {"All detections in a namespace", "Critical detections in the last hour",
            "The process tree that led to a detection",
            "Who connected to the Kubernetes API from a container", "Reverse shells"} <= questions
    for q in QUERIES:
        assert set(q) <= {"name", "question", "kind", "query", "params", "source", "description"}, q
        assert q["kind"] in ("logql", "promql", "jaeger") and q["description"]
        unfilled = set(re.findall(r"\$(\w+)", json.dumps(q["query"]))) - set(q.get("params", []))
        assert not unfilled, f"{q['name']}: undeclared params {unfilled}"


@pytest.mark.parametrize("entry", QUERIES, ids=[q["name"] for q in QUERIES])
def test_documented_query_answers_on_real_backends(entry: dict[str, Any], sent: Scenario, loki: Loki,
                                                   prometheus: Prometheus, jaeger: Jaeger) -> None:
    query = fill(entry["query"], params(sent))
    if entry.get("source") == "processor":
        run(entry, query, loki, prometheus, jaeger)   # executes; no processor is scraped here
        return
    assert wait_until(lambda: run(entry, query, loki, prometheus, jaeger) > 0, 60, 1.0), \
        f"{entry['name']}: no result for {query!r}"


GRAFANA_VARS = {"namespace": ".*", "__rate_interval": "1m", "__interval": "1m", "__range": "1h",
                "__auto": "1m", "rule": ".*"}


def panel_targets() -> list[tuple[str, str, str]]:
    """(dashboard/panel title, datasource type, expression) for every panel target."""
    out = []
    for path in DASHBOARDS:
        dash = json.loads(path.read_text())
        for panel in dash["panels"]:
            for t in panel.get("targets", []):
                ds = (t.get("datasource") or panel.get("datasource") or {}).get("type", "")
                expr = t.get("expr") or t.get("query") or ""
                out.append((f"{path.stem}/{panel['title']}", ds, expr))
    return out


def test_dashboards_have_the_required_panels() -> None:
    titles = " | ".join(t for t, _, _ in panel_targets()).lower()
    for word in ("by rule", "namespace", "top workloads", "dropped", "latency", "detections log"):
        assert word in titles, word
    assert DASHBOARDS


@pytest.mark.parametrize("title,ds,expr", panel_targets(), ids=[t for t, _, _ in panel_targets()])
def test_dashboard_panel_query_executes(title: str, ds: str, expr: str, sent: Scenario, loki: Loki,
                                        prometheus: Prometheus) -> None:
    query = Template(expr).safe_substitute(GRAFANA_VARS)
    query = re.sub(r"\$\{(\w+)(:\w+)?\}", lambda m: GRAFANA_VARS.get(m.group(1), m.group(0)), query)
    assert "$" not in query, f"{title}: unfilled Grafana variable in {query!r}"
    try:
        if ds == "loki":
            loki.query_range(query)
        elif ds == "prometheus":
            prometheus.query(query)
        else:
            raise AssertionError(f"{title}: datasource type {ds!r} has no executable target")
    except StackError as e:
        pytest.fail(f"{title}: {e}")
