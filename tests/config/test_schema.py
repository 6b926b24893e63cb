"""The published JSON Schemas: in step with the dataclasses, and true of the shipped configs."""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
import sys
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from otelguard import schemas

ROOT = Path(__file__).resolve().parents[2]
PUBLISHED = ROOT / "docs" / "config"
PIPELINE_DATA = ROOT / "tests" / "processors" / "testdata" / "config"


def test_published_schemas_match_the_dataclasses() -> None:
    """Regenerate with ``otelguard config schema --write docs/config`` and review the diff."""
    generated = schemas.published()
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in PUBLISHED.glob("*.schema.json")}
    assert sorted(on_disk) == sorted(generated)
    stale = [name for name, text in generated.items() if on_disk[name] != text]
    assert not stale, f"stale: {stale}; run `otelguard config schema --write docs/config`"


def _validator(kind: str) -> jsonschema.protocols.Validator:
    schema = json.loads((PUBLISHED / f"{kind}.schema.json").read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    validator: jsonschema.protocols.Validator = cls(schema)
    return validator


def _errors(kind: str, doc: Any) -> list[str]:
    return sorted(f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
                  for e in _validator(kind).iter_errors(doc))


def _docstring_example(module: str, marker: str) -> Any:
    """The YAML example of a module's docstring, from ``marker`` to the end of the block."""
    source = (ROOT / "src" / module).read_text(encoding="utf-8")
    doc = ast.get_docstring(ast.parse(source)) or ""
    start = doc.index(marker)
    block = []
    for line in doc[start:].splitlines():
        if block and line and not line.startswith(" "):
            break
        block.append(line)
    return yaml.safe_load(textwrap.dedent("\n".join(block)))


def _processor_configmap() -> Any:
    for doc in yaml.safe_load_all((ROOT / "deploy" / "processor.yaml").read_text()):
        if doc and doc.get("kind") == "ConfigMap" and doc["metadata"]["name"] == "otelguard-processor":
            return yaml.safe_load(doc["data"]["pipeline.yaml"])
    raise AssertionError("deploy/processor.yaml has no otelguard-processor ConfigMap")


def test_shipped_pipeline_configs_are_valid() -> None:
    for doc in (_processor_configmap(),
                yaml.safe_load((PIPELINE_DATA / "good.yaml").read_text()),
                _docstring_example("otelguard/processors/config.py", "    service:"),
                _docstring_example("otelguard/processors/detection/config.py", "    processors:")):
        assert _errors("pipeline", doc) == []


def test_shipped_sensor_example_is_valid_for_agent_and_run() -> None:
    doc = _docstring_example("otelguard/ebpf/settings.py", "    sensor:")
    assert doc["sensor"]["probe"]["ringbuf_pages"] == 2048
    assert _errors("agent", doc) == []
    assert _errors("run", doc) == []


def test_schema_refuses_what_the_loader_refuses() -> None:
    bad = yaml.safe_load((PIPELINE_DATA / "bad.yaml").read_text())
    errors = _errors("pipeline", bad)
    for expected in ("service.max_request_bytes: 'lots' is not of type 'integer'",
                     "service: Additional properties are not allowed ('colour' was unexpected)",
                     "exporters.1: 7 is not of type 'string'",
                     "processors.0.config.window_seconds: 'soon' is not of type 'number'",
                     "processors.1.config: Additional properties are not allowed "
                     "('hold_seconds' was unexpected)",
                     "processors.2.type: 'no_such_processor' is not one of "):
        assert any(e.startswith(expected) for e in errors), (expected, errors)
    assert _errors("agent", {"sensor": {"probe": {"self_tgid": 1}}, "processors": []}) == [
        ": Additional properties are not allowed ('processors' was unexpected)",
        "sensor.probe: Additional properties are not allowed ('self_tgid' was unexpected)"]
    assert _errors("run", {"sensor": {"probes": ["kprobe"]}, "exporter": {"max_batch": "x"}}) == [
        "exporter.max_batch: 'x' is not of type 'integer'",
        "sensor.probes.0: 'kprobe' is not one of ['process', 'file', 'network', 'privilege', "
        "'evasion']"]


def test_example_configs_point_editors_at_their_schema() -> None:
    first = (PIPELINE_DATA / "good.yaml").read_text().splitlines()[0]
    prefix = "# yaml-language-server: $schema="
    assert first.startswith(prefix)
    assert (PIPELINE_DATA / first[len(prefix):]).resolve() == PUBLISHED / "pipeline.schema.json"


@pytest.mark.parametrize("kind", ["agent", "run", "pipeline"])
def test_the_command_prints_and_writes_the_schemas(
        kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from otelguard.cli import main

    assert main(["config", "schema", kind]) == 0
    assert capsys.readouterr().out == (PUBLISHED / f"{kind}.schema.json").read_text()
    assert main(["config", "schema", "--write", str(tmp_path)]) == 0
    assert (tmp_path / f"{kind}.schema.json").read_text() == schemas.published()[
        f"{kind}.schema.json"]


def test_the_config_package_is_a_bottom_layer() -> None:
    """otelguard.config imports only the standard library, PyYAML and otelguard.semconv."""
    allowed_ours = {"otelguard.config", "otelguard.semconv"}
    offenders = {}
    for path in sorted((ROOT / "src" / "otelguard" / "config").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module
                     else [])
            for name in names:
                top = name.split(".")[0]
                ours = name.startswith("otelguard") and not any(
                    name == a or name.startswith(a + ".") for a in allowed_ours)
                if ours or (top not in sys.stdlib_module_names and top not in ("yaml",
                                                                             "otelguard")):
                    offenders.setdefault(path.name, []).append(name)
    assert offenders == {}


def test_field_comments_become_descriptions() -> None:
    from otelguard.config import schema_of
    from otelguard.exporter.config import ExporterConfig
    from otelguard.processors.k8s.config import Config as K8sConfig

    exporter = schema_of(ExporterConfig)["properties"]
    assert exporter["max_batch"] == {"description": "records per request; also the drain size",
                                     "type": "integer", "default": 512}
    k8s = schema_of(K8sConfig)["properties"]
    assert k8s["max_held_batches"]["description"].startswith(  # two comment lines, joined
        "At most this many held Resources (one Resource's records from one batch each); beyond")
    assert schema_of(Uncommented)["properties"]["bare"] == {"type": "integer", "default": 1}


@dataclass(frozen=True)
class Uncommented:
    bare: int = 1
