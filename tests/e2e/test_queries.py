"""Every documented query in deploy/queries/ and every Grafana panel query, run against the real
Loki, Prometheus and Jaeger after the attack scenario went through the Collector.

Documented queries must not only parse: each one answers its question on the scenario's data
(non-empty), except PromQL over the processor service's own counters, which this test does not
run (they must execute without error)."""

from __future__ import annotations

import json
import re
import secrets
from string import Template
from typing import Any, Iterator

import grpc
import pytest
import yaml
from opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc import LogsServiceStub
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub

from otelguard import semconv as S
from otelguard.otlp.messages import set_attrs
from tests.e2e.scenario import KUBE_API_ADDRESS, Scenario
from tests.support.incidents import attack, latest, pod, trace
from tests.support.polling import wait_until
from tests.support.stack import ROOT, Collector, Jaeger, Loki, Prometheus, StackError

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


# Every dashboard variable at "All" (its allValue), and Grafana's built-in intervals.
GRAFANA_VARS = {"cluster": ".+", "namespace": ".*", "rule": ".*", "priority": ".*",
                "__rate_interval": "1m", "__interval": "1m", "__range": "1h", "__auto": "1m"}


def panels() -> list[tuple[str, dict[str, Any]]]:
    return [(f"{path.stem}/{panel['title']}", panel) for path in DASHBOARDS
            for panel in json.loads(path.read_text())["panels"]]


def panel_targets() -> list[tuple[str, str, str]]:
    """(dashboard/panel title, datasource type, expression) for every panel target; an instant
    Loki target's type is ``loki-instant``."""
    out = []
    for title, panel in panels():
        for t in panel.get("targets", []):
            ds = (t.get("datasource") or panel.get("datasource") or {}).get("type", "")
            if ds == "loki" and t.get("queryType") == "instant":
                ds = "loki-instant"
            expr = t.get("expr") or t.get("query") or ""
            out.append((title, ds, expr))
    return out


def grafana_fill(expr: str, values: dict[str, str]) -> str:
    """A panel expression with its dashboard variables replaced as Grafana would."""
    query = Template(expr).safe_substitute(values)
    return re.sub(r"\$\{(\w+)(:\w+)?\}", lambda m: values.get(m.group(1), m.group(0)), query)


def test_dashboards_have_the_required_panels() -> None:
    titles = " | ".join(t for t, _, _ in panel_targets()).lower()
    for word in ("by rule", "namespace", "top workloads", "dropped", "latency", "detections log",
                 "open incidents", "incident stories", "att&ck tactic", "nodes reporting",
                 "nodes expected", "coverage by node", "enrichment ratio", "noise control",
                 "latest detections"):
        assert word in titles, word
    assert DASHBOARDS
    for path in DASHBOARDS:  # the queries below run with each variable at its All value
        for v in json.loads(path.read_text())["templating"]["list"]:
            if v["type"] != "datasource":
                assert GRAFANA_VARS[v["name"]] == v["allValue"], (path.name, v["name"])


@pytest.mark.parametrize("title,ds,expr", panel_targets(), ids=[t for t, _, _ in panel_targets()])
def test_dashboard_panel_query_executes(title: str, ds: str, expr: str, sent: Scenario, loki: Loki,
                                        prometheus: Prometheus) -> None:
    query = grafana_fill(expr, GRAFANA_VARS)
    assert "$" not in query, f"{title}: unfilled Grafana variable in {query!r}"
    try:
        if ds == "loki":
            loki.query_range(query)
        elif ds == "loki-instant":
            loki.query(query)
        elif ds == "prometheus":
            prometheus.query(query)
        else:
            raise AssertionError(f"{title}: datasource type {ds!r} has no executable target")
    except StackError as e:
        pytest.fail(f"{title}: {e}")


def query_variables() -> list[tuple[str, dict[str, Any]]]:
    return [(f"{path.stem}/${v['name']}", v) for path in DASHBOARDS
            for v in json.loads(path.read_text())["templating"]["list"] if v["type"] == "query"]


@pytest.mark.parametrize("title,var", query_variables(), ids=[t for t, _ in query_variables()])
def test_dashboard_variable_query_lists_the_scenario(title: str, var: dict[str, Any], sent: Scenario,
                                                     loki: Loki, prometheus: Prometheus) -> None:
    """Each query variable lists the scenario's value, asked as Grafana asks: Loki's label values
    under the variable's stream selector, Prometheus' label_values(series, label)."""
    q = var["query"]

    def values() -> set[str]:
        if var["datasource"]["type"] == "loki":
            stream = grafana_fill(q.get("stream") or "", GRAFANA_VARS)
            return set(loki.label_values(q["label"], stream or None))
        m = re.fullmatch(r"label_values\((.+), (\w+)\)", grafana_fill(q["query"], GRAFANA_VARS))
        assert m, f"{title}: not a label_values() query: {q['query']}"
        series, label = m.groups()
        return {r["metric"].get(label, "") for r in prometheus.query(f"group by ({label}) ({series})")}

    expected = {"cluster": sent.cluster, "namespace": sent.namespace, "rule": sent.rule_reverse_shell}
    assert wait_until(lambda: expected[var["name"]] in values(), 60, 1.0), f"{title}: {values()}"


# --- the incident panels: each query returns the incident, each link template resolves ---------

INCIDENT_PANELS = [(t, p) for t, p in panels()
                   if any('otelguard_stream="incident"' in t.get("expr", "") for t in p["targets"])]
FIELD = re.compile(r"\$\{__data\.fields\.(\w+)\}")


@pytest.fixture(scope="module")
def incident(loki: Loki, jaeger: Jaeger, backends_collector: Collector
             ) -> Iterator[tuple[str, dict[str, Any]]]:
    """An attack chain's records and incident versions (the real stages) and its process span,
    through the real Collector into Loki and Jaeger: (namespace, the incident's last version)."""
    ns = f"panel-{secrets.token_hex(4)}"
    batches = attack(ns) + attack(ns + "-closed", close=True)
    ours = [b for b in batches if any(
        kv.value.string_value == ns for rl in b.resource_logs for kv in rl.resource.attributes)]
    (_, (attrs, _)), = latest(ours).items()
    spans = ExportTraceServiceRequest()
    rs = spans.resource_spans.add()
    set_attrs(rs.resource.attributes, {**pod(name="web-7d9f-abcde", ns=ns),
                                       S.SERVICE_NAME: "web"})
    span = rs.scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name = trace(ns), trace(ns)[:8], "exec /bin/sh"
    span.start_time_unix_nano = span.end_time_unix_nano = max(
        r.time_unix_nano for b in batches for rl in b.resource_logs
        for sl in rl.scope_logs for r in sl.log_records)
    with grpc.insecure_channel(backends_collector.otlp_grpc) as channel:
        for b in batches:
            LogsServiceStub(channel).Export(b, timeout=10)  # type: ignore[no-untyped-call]
        TraceServiceStub(channel).Export(spans, timeout=10)  # type: ignore[no-untyped-call]
    q = f'{{otelguard_stream="incident", k8s_namespace_name="{ns}"}}'
    assert wait_until(lambda: loki.query_range(q)["result"], 60), "no incident stream in Loki"
    yield ns, attrs


def incident_rows(panel: dict[str, Any], ns: str, loki: Loki) -> list[dict[str, str]]:
    """The label sets (one per table row or log stream) the panel's queries return for ``ns``."""
    rows = []
    for t in panel["targets"]:
        query = grafana_fill(t["expr"], {**GRAFANA_VARS, "namespace": ns})
        if t.get("queryType") == "instant":
            rows += [r["metric"] for r in loki.query(query)["result"]]
        else:
            rows += [r["stream"] for r in loki.query_range(query)["result"]]
    return rows


def test_the_dashboards_have_incident_panels() -> None:
    kinds = {p["type"] for _, p in INCIDENT_PANELS}
    assert {"table", "logs"} <= kinds, INCIDENT_PANELS


@pytest.mark.parametrize("title,panel", INCIDENT_PANELS, ids=[t for t, _ in INCIDENT_PANELS])
def test_incident_panel_returns_the_incident(title: str, panel: dict[str, Any], loki: Loki,
                                             incident: tuple[str, dict[str, Any]]) -> None:
    ns, attrs = incident
    iid = attrs[S.INCIDENT_ID]
    assert wait_until(lambda: any(r.get("otelguard_incident_id") == iid
                                  for r in incident_rows(panel, ns, loki)), 30), \
        f"{title}: {incident_rows(panel, ns, loki)}"
    rows = [r for r in incident_rows(panel, ns, loki) if r.get("otelguard_incident_id") == iid]
    if panel["type"] == "table":  # one row: the latest version, still open
        (row,) = rows
        assert row["otelguard_incident_severity"] == attrs[S.INCIDENT_SEVERITY] == "CRITICAL"
        assert row["otelguard_incident_title"] == attrs[S.INCIDENT_TITLE]
        # an incident whose latest version is closed is not open: not in the table
        closed = f"{ns}-closed"
        assert wait_until(lambda: len(loki.query_range(
            f'{{otelguard_stream="incident", k8s_namespace_name="{closed}"}}'
            ' | otelguard_incident_status="closed"')["result"]) > 0, 30)
        assert incident_rows(panel, closed, loki) == []
        assert wait_until(lambda: incident_rows(panel, f"{ns}.*", loki) == [row], 10)


def test_incident_table_links_open_the_story_evidence_and_trace(
        loki: Loki, jaeger: Jaeger, incident: tuple[str, dict[str, Any]]) -> None:
    ns, attrs = incident
    (title, table), = [(t, p) for t, p in INCIDENT_PANELS if p["type"] == "table"]
    assert wait_until(lambda: incident_rows(table, ns, loki), 30)
    (row,) = incident_rows(table, ns, loki)
    links = table["fieldConfig"]["defaults"]["links"]
    assert {link["internal"]["datasourceUid"] for link in links} == {"${DS_LOKI}", "${DS_JAEGER}"}
    evidence = {str(u) for u in attrs[S.INCIDENT_EVIDENCE] if not re.fullmatch(r"[0-9a-f]{32}", str(u))}
    for link in links:
        target = link["internal"]
        template = json.dumps(target["query"])
        for name in FIELD.findall(template):
            assert name in row, f"{title}: link {link['title']!r} names a column the query lacks: {name}"
        query = json.loads(FIELD.sub(lambda m: json.dumps(row[m.group(1)])[1:-1], template))
        if target["datasourceUid"] == "${DS_JAEGER}":
            assert query["query"] == trace(ns).hex()
            assert wait_until(lambda: jaeger.trace(query["query"]), 30), "trace not in Jaeger"
            continue
        found = loki.query_range(query["expr"])["result"]
        if "otelguard_stream=\"incident\"" in query["expr"]:  # the story and its versions
            assert {s["stream"]["otelguard_incident_id"] for s in found} == {attrs[S.INCIDENT_ID]}
            assert any("/etc/shadow" in v[1] for s in found for v in s["values"])
        else:  # the evidence: every record the story cites (detections and their triggers)
            cited = {s["stream"]["log_record_uid"] for s in found for _ in s["values"]}
            assert evidence <= cited, (evidence - cited, query["expr"])
    # the record's own link attribute points at the same trace in Jaeger's UI
    assert attrs[S.INCIDENT_LINK_TRACE] == f"http://127.0.0.1:16686/trace/{trace(ns).hex()}"
