"""The shipped Grafana dashboards, checked as Grafana would read them (no Grafana runs here; every
query executes against the real backends in tests/e2e/test_queries.py).

Every panel and target names its datasource through a datasource variable (importable into any
Grafana: ``__inputs`` declares them), every ``$variable`` a query uses exists, panel ids are
unique, and the layout's panels do not overlap."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

import pytest

ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
BUILTIN = {"__rate_interval", "__interval", "__range", "__auto", "__data", "__value",
           "__all", "__interval_ms", "__range_s", "__from", "__to"}
VARIABLE = re.compile(r"\$(?:\{(\w+)(?:[:.][^}]*)?\}|(\w+))")


def walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, f"{path}[{i}]")


@pytest.fixture(params=DASHBOARDS, ids=[p.stem for p in DASHBOARDS])
def dashboard(request: pytest.FixtureRequest) -> dict[str, Any]:
    return dict(json.loads(Path(request.param).read_text()))


def test_there_is_a_dashboard() -> None:
    assert DASHBOARDS


def test_datasources_are_variables_declared_as_inputs(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    ds_vars = {n: v["query"] for n, v in variables.items() if v["type"] == "datasource"}
    inputs = {i["name"]: i["pluginId"] for i in dashboard["__inputs"] if i["type"] == "datasource"}
    assert inputs == ds_vars, (inputs, ds_vars)
    seen = 0
    for path, node in walk(dashboard):
        if path.endswith(".datasource"):
            assert isinstance(node, dict), f"{path}: {node!r} (a name, not a variable reference)"
            m = re.fullmatch(r"\$\{(\w+)\}", node.get("uid", ""))
            assert m and m.group(1) in ds_vars, f"{path}: hard-coded datasource {node}"
            assert ds_vars[m.group(1)] == node["type"], f"{path}: {node} is not a {node['type']}"
            seen += 1
        if path.endswith(".datasourceUid"):
            m = re.fullmatch(r"\$\{(\w+)\}", node)
            assert m and m.group(1) in ds_vars, f"{path}: hard-coded datasource uid {node!r}"
    panels = dashboard["panels"]
    assert seen >= len(panels)
    for p in panels:  # every panel and target names one
        assert "datasource" in p, p["title"]
        for t in p.get("targets", []):
            assert t.get("datasource", {}).get("type") == p["datasource"]["type"], p["title"]


def test_every_variable_used_exists_and_every_one_is_used(dashboard: dict[str, Any]) -> None:
    defined = {v["name"] for v in dashboard["templating"]["list"]}
    used: set[str] = set()
    for path, node in walk(dashboard):
        if isinstance(node, str) and "$" in node:
            for braced, bare in VARIABLE.findall(node):
                used.add(braced or bare)
    missing = used - defined - BUILTIN
    assert not missing, f"variables used but not defined: {missing}"
    assert defined - used == set(), f"variables defined but never used: {defined - used}"
    for required in ("cluster", "namespace", "rule", "priority"):
        v = next(v for v in dashboard["templating"]["list"] if v["name"] == required)
        assert v["includeAll"] and v["allValue"] in (".*", ".+") and v["multi"], required


def test_ids_unique_and_panels_do_not_overlap(dashboard: dict[str, Any]) -> None:
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), ids
    names = [v["name"] for v in dashboard["templating"]["list"]]
    assert len(names) == len(set(names)), names
    for p in panels:
        refs = [t["refId"] for t in p.get("targets", [])]
        assert len(refs) == len(set(refs)), p["title"]
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
    cells: dict[tuple[int, int], str] = {}
    for p in panels:
        g = p["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]


def test_uid_and_schema_fields(dashboard: dict[str, Any]) -> None:
    assert re.fullmatch(r"[a-z0-9-]{1,40}", dashboard["uid"])
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["title"]
    for p in dashboard["panels"]:
        assert p["type"] in {"timeseries", "stat", "table", "logs", "bargauge", "gauge"}, p["type"]
        assert p["title"] and p.get("targets"), p
