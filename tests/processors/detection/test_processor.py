"""The falco_rules stage end to end on real OTLP batches: the detection record's shape,
where it lands in the batch, telemetry, config loading, the stage contract and the CLI."""

from __future__ import annotations

from pathlib import Path

import argparse
import uuid

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otelguard import semconv as S
from otelguard.processors import registry
from otelguard.config import from_mapping, load_yaml
from otelguard.processors.detection import cli
from otelguard.processors.detection.config import Config
from otelguard.processors.detection.engine import RuleEngine
from otelguard.processors.detection.processor import FalcoRulesProcessor, create
from otelguard.processors.detection.ruleset import Priority
from otelguard.processors.errors import ConfigError
from otelguard.otlp.messages import attrs_dict, count_records
from otelguard.processors.stage import Stage

from tests.support.metrics import sample
from .casefile import BASE_TIME, batch_of, load_cases

CASES = {c["rule"]: c for c in load_cases("stable_rules.yaml")}
RULE = "Detect release_agent File Container Escapes"


def _detections_counted() -> float:
    return sample("otelguard_detections_total", rule=RULE, priority="CRITICAL",
                  tactic="privilege_escalation", k8s_namespace_name="shop", workload="web")


def test_detection_record_shape() -> None:
    stage = create(Config())
    batch = batch_of(CASES[RULE]["match"])
    trigger = batch.resource_logs[0].scope_logs[0].log_records[0]
    before = _detections_counted()
    out = stage.process(batch)
    assert out is batch and len(batch.resource_logs) == 2
    rl = batch.resource_logs[1]
    res = attrs_dict(rl.resource.attributes)
    assert res[S.STREAM] == S.STREAM_DETECTION
    assert res[S.CONTAINER_ID] == attrs_dict(batch.resource_logs[0].resource.attributes)[
        S.CONTAINER_ID]
    assert S.STREAM not in attrs_dict(batch.resource_logs[0].resource.attributes)
    assert rl.scope_logs[0].scope.name == S.SCOPE_PROCESSORS
    recs = list(rl.scope_logs[0].log_records)
    names = [attrs_dict(r.attributes)[S.SECURITY_RULE_NAME] for r in recs]
    assert RULE in names
    rec = recs[names.index(RULE)]
    a = attrs_dict(rec.attributes)
    assert rec.event_name == S.EV_DETECTION
    assert rec.severity_number == 21 and rec.severity_text == "CRITICAL"
    assert rec.time_unix_nano == trigger.time_unix_nano == BASE_TIME
    assert rec.trace_id == trigger.trace_id and rec.span_id == trigger.span_id
    assert rec.body.string_value.startswith(
        "Detect an attempt to exploit a container escape using release_agent file | "
        "file=/tmp/cgrp/release_agent cap_effective=CAP_SYS_ADMIN CAP_DAC_OVERRIDE "
        "evt_type=openat user=www-data user_uid=0 user_loginuid=<NA> process=php-fpm")
    assert a[S.SECURITY_RULE_UUID] == str(uuid.UUID(a[S.SECURITY_RULE_UUID]))  # type: ignore[arg-type]
    assert a[S.SECURITY_RULE_RULESET_NAME] == "falco_rules"
    assert a[S.SECURITY_RULE_PRIORITY] == "CRITICAL"
    assert a[S.SECURITY_RULE_CATEGORY] == "process"
    assert a[S.THREAT_TECHNIQUE_ID] == ["T1611"]
    assert a[S.THREAT_TACTIC_NAME] == ["privilege_escalation"]
    assert a[S.SECURITY_RULE_REFERENCE] == "https://attack.mitre.org/techniques/T1611/"
    assert "maturity_stable" in a[S.SECURITY_RULE_TAGS]  # type: ignore[operator]
    assert a[S.TRIGGER_RECORD_UID] == attrs_dict(trigger.attributes)[S.LOG_RECORD_UID]
    assert a[S.TRIGGER_EVENT_NAME] == S.EV_FILE_OPEN
    # evidence: the trigger attributes the condition and output read
    assert a[S.FILE_PATH] == "/tmp/cgrp/release_agent"
    assert a[S.PROCESS_CAP_EFFECTIVE] == ["CAP_SYS_ADMIN", "CAP_DAC_OVERRIDE"]
    assert a[S.FILE_OPEN_FLAGS] == "O_WRONLY|O_CREAT|O_TRUNC"
    assert S.PROCESS_PARENT_PID not in a  # not referenced by the rule
    assert _detections_counted() == before + 1
    # a second pass never re-evaluates the detection records
    n = count_records(batch)
    stage.process(batch)
    assert count_records(batch) == n + len(recs)


def test_uuid_is_stable_across_loads() -> None:
    a = RuleEngine.from_files().rules
    b = RuleEngine.from_files().rules
    assert [r.uuid for r in a] == [r.uuid for r in b]
    assert len({r.uuid for r in a}) == len(a)


def test_priority_severity_map() -> None:
    got = {p.name: p.otel for p in Priority}
    assert got == {"EMERGENCY": 21, "ALERT": 21, "CRITICAL": 21, "ERROR": 17, "WARNING": 13,
                   "NOTICE": 10, "INFORMATIONAL": 9, "DEBUG": 5}
    assert Priority.parse("info") is Priority.INFORMATIONAL


def test_min_priority_and_disabled_rules() -> None:
    stage = create(Config(min_priority="critical",
                          disabled_rules=("Drop and execute new binary in container",)))
    assert all(r.priority <= Priority.CRITICAL for r in stage.engine.rules)
    assert "Drop and execute new binary in container" not in {r.name for r in stage.engine.rules}
    assert "Fileless execution via memfd_create" in {r.name for r in stage.engine.rules}


def test_config_from_yaml_collects_errors_with_paths() -> None:
    raw = load_yaml("rules: [a.yaml]\nmin_priority: loud\nstate: {max_processes: 0, bogus: 1}\n",
                    "cfg.yaml")
    with pytest.raises(ConfigError) as info:
        from_mapping(Config, raw, path="config", source="cfg.yaml")
    text = str(info.value)
    assert "config.state.bogus" in text and "max_processes" in text
    ok = from_mapping(Config, load_yaml("rules: [x.yaml]\nstate: {socket_window_seconds: 30}\n"))
    assert ok.rules == ("x.yaml",) and ok.state.socket_window_seconds == 30


def test_bad_rules_file_stops_creation(tmp_path: object) -> None:
    import pathlib

    p = pathlib.Path(str(tmp_path)) / "bad.yaml"
    p.write_text("- rule: x\n  desc: d\n  condition: proc.name = (\n  output: o\n  priority: INFO\n")
    with pytest.raises(ConfigError) as info:
        create(Config(rules=(str(p),)))
    assert f"{p}:1" in str(info.value)


def test_stage_contract_and_registry() -> None:
    stage = registry.create("falco_rules")
    assert isinstance(stage, Stage) and isinstance(stage, FalcoRulesProcessor)
    stage.start()
    spans = ExportTraceServiceRequest()
    assert stage.process(spans) is spans
    stage.shutdown()


STABLE_RULES = Path(__file__).resolve().parents[3] / "src/otelguard/rules/falco_rules.yaml"


def test_cli_validate_and_list(capsys: pytest.CaptureFixture[str], tmp_path: object) -> None:
    assert cli.validate_main(argparse.Namespace(files=[str(STABLE_RULES)])) == 0
    out = capsys.readouterr().out
    assert out.count("LOADED") == 25 and "SKIPPED" not in out
    assert "25 loaded, 0 cannot run on this sensor, 0 skipped, 0 disabled, 0 error(s)" in out
    import pathlib

    bad = pathlib.Path(str(tmp_path)) / "bad.yaml"
    bad.write_text("- rule: a\n  desc: d\n  condition: thread.cap_inheritable contains X\n  output: o\n"
                   "  priority: INFO\n- rule: b\n  desc: d\n  condition: nope\n  output: o\n"
                   "  priority: INFO\n")
    assert cli.validate_main(argparse.Namespace(files=[str(bad)])) == 1
    out = capsys.readouterr().out
    assert "CANNOT-RUN a" in out and "cannot run on this sensor: field thread.cap_inheritable" in out
    assert f"{bad}:6: error: rule 'b': undefined macro 'nope'" in out
    assert cli.list_main(argparse.Namespace(rules=None)) == 0
    out = capsys.readouterr().out
    assert "30 active rule(s)" in out and "Reverse shell" in out


def test_evaluation_never_raises_on_odd_values() -> None:
    engine = RuleEngine.from_files()
    odd = {"event": S.EV_PROCESS_EXEC, "attrs": {
        S.SYSCALL_NAME: "execve", S.SYSCALL_RET: "zero", S.PROCESS_EXECUTABLE_NAME: 5,
        S.PROCESS_COMMAND_ARGS: "not a list", S.PROCESS_ANCESTORS: [1, 2],
        S.PROCESS_TTY: "x", S.PROCESS_CAP_EFFECTIVE: 7, S.PROCESS_WORKING_DIRECTORY: ""}}
    net = {"event": S.EV_NETWORK_CONNECT, "attrs": {
        S.SYSCALL_NAME: "connect", S.NETWORK_PEER_ADDRESS: "not-an-ip",
        S.NETWORK_PEER_PORT: "http", S.NETWORK_TYPE: "ipv4"}}
    engine.evaluate(batch_of(odd, net, {"event": "otelguard.unknown", "attrs": {}}))
    assert engine.errors == 0
