"""Falco JSON alerts (transport/falco.py) and per-output filters (transport/filters.py).

The alert format is checked against Falco's own documented alerts (tests/transport/golden):
the same event goes through the real rule engine and the alert otelguard writes must equal
Falco's, key by key and in Falco's key order. falcosidekick delivery is tested against a real
HTTP server on 127.0.0.1 that checks what falcosidekick's handler checks before it forwards an
alert (POST, a JSON body that decodes into its payload type, a known priority, a rule, a
parsable time, at least one output field).
"""

from __future__ import annotations

import datetime
import io
import json
import time
from pathlib import Path
from typing import Any, Optional

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otelguard import semconv as S
from otelguard import telemetry
from otelguard.otlp.messages import set_attrs
from otelguard.processors.detection.engine import RuleEngine
from otelguard.transport import SpecError, parse_spec
from otelguard.transport.console import ConsoleTransport
from otelguard.transport.delivery import Delivery
from otelguard.transport.falco import (
    FalcosidekickTransport, falco_alerts, falco_priority, rfc3339_ns,
)
from otelguard.transport.filters import FilteredTransport, RecordFilter, split_options
from otelguard.transport.security import INSECURE_CLIENT
from tests.support.sidekick import Sidekick

GOLDEN = Path(__file__).parent / "golden"

# Falco's rule as it was when the documented alerts were written; %container.info expanded
# the way Falco's -pk option expands it.
RULE = """
- rule: Terminal shell in container
  desc: A shell was used as the entrypoint/exec point into a container with an attached terminal.
  condition: evt.type = execve and proc.name in (bash, sh) and proc.tty != 0
  output: >
    A shell was spawned in a container with an attached terminal (user=%user.name
    user_loginuid=%user.loginuid k8s.ns=%k8s.ns.name k8s.pod=%k8s.pod.name
    container=%container.id shell=%proc.name parent=%proc.pname cmdline=%proc.cmdline
    terminal=%proc.tty container_id=%container.id image=%container.image.repository)
  priority: CRITICAL
  tags: [shell, mitre_execution, container]
"""
RULE_2019 = """
- rule: Terminal shell in container
  desc: shell with a terminal
  condition: evt.type = execve and proc.name in (bash, sh) and proc.tty != 0
  output: >
    A shell was spawned in a container with an attached terminal (user=%user.name
    k8s.pod=%k8s.pod.name container=%container.id shell=%proc.name parent=%proc.pname
    cmdline=%proc.cmdline terminal=%proc.tty)
  priority: NOTICE
  tags: [shell, container]
"""


def _exec(ns: int, resource: dict[str, Any], args: list[str], parent: Optional[str],
          login_uid: Optional[int]) -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    set_attrs(rl.resource.attributes, resource)
    rec = rl.scope_logs.add().log_records.add()
    rec.event_name = S.EV_PROCESS_EXEC
    rec.time_unix_nano = ns
    attrs: dict[str, Any] = {
        S.SYSCALL_NAME: "execve", S.SYSCALL_RET: 0, S.PROCESS_PID: 4242,
        S.PROCESS_EXECUTABLE_NAME: args[0], S.PROCESS_EXECUTABLE_PATH: f"/bin/{args[0]}",
        S.PROCESS_COMMAND_ARGS: args, S.PROCESS_USER_ID: 0, S.PROCESS_USER_NAME: "root",
        S.PROCESS_TTY: 34816, S.LOG_RECORD_UID: f"uid-{ns}",
    }
    if parent:
        attrs[S.PROCESS_ANCESTORS] = [parent]
    if login_uid is not None:
        attrs[S.PROCESS_LOGIN_UID] = login_uid
    set_attrs(rec.attributes, attrs)
    return req


def _detections(rule_text: str, req: ExportLogsServiceRequest) -> ExportLogsServiceRequest:
    engine = RuleEngine.from_text(("falco_rules.yaml", rule_text))
    assert len(engine.evaluate_and_append(req)) == 1
    return req


def _documented_2023() -> ExportLogsServiceRequest:
    return _detections(RULE, _exec(
        1685022245478445995,
        {S.HOST_NAME: "falco-xczjd", S.CONTAINER_ID: "ee97d9c4186f" + "0" * 52,
         S.CONTAINER_IMAGE_NAME: "docker.io/library/alpine:3.18",
         S.K8S_NAMESPACE_NAME: "default", S.K8S_POD_NAME: "kubecon"},
        ["sh", "-c", "clear; (bash || ash || sh)"], "runc", 4294967295))


def _documented_2019() -> ExportLogsServiceRequest:
    return _detections(RULE_2019, _exec(
        1547024316335246440,
        {S.K8S_NODE_NAME: "worker-1", S.CONTAINER_ID: "bb1a36fcb1d5" + "1" * 52,
         S.K8S_POD_NAME: "falco-dnxsm"},
        ["bash"], None, None))


@pytest.mark.parametrize("golden, build", [
    ("falco_terminal_shell.json", _documented_2023),
    ("falco_terminal_shell_no_parent.json", _documented_2019),
])
def test_alerts_equal_falcos_documented_alerts(golden: str, build: Any) -> None:
    alerts = falco_alerts(build(), "unused-default-host", clock=time.gmtime)
    assert len(alerts) == 1
    got = alerts[0][1]
    want = json.loads((GOLDEN / golden).read_text())
    for key in want:  # field by field, so a failure names the field
        assert got[key] == want[key], key
    assert list(got) == list(want)  # Falco's key order, output_fields last
    assert list(got["output_fields"]) == sorted(want["output_fields"])
    assert got == want


def test_alert_field_facts() -> None:
    """What falcosidekick and Talon rely on, stated on its own."""
    _uid, alert = falco_alerts(_documented_2023(), "h", clock=time.gmtime)[0]
    assert alert["priority"] in ("Emergency", "Alert", "Critical", "Error", "Warning", "Notice",
                                 "Informational", "Debug")
    parsed = datetime.datetime.fromisoformat(alert["time"].replace("Z", "+00:00")[:26] + "+00:00")
    assert parsed.tzinfo is not None
    assert alert["time"].endswith("Z") and len(alert["time"].split(".")[1]) == 10  # 9 digits + Z
    assert alert["output_fields"]["evt.time"] == 1685022245478445995
    assert isinstance(alert["output_fields"]["proc.tty"], int)
    assert alert["source"] == "syscall"
    assert alert["tags"] == sorted(alert["tags"])
    assert "uuid" not in alert  # Falco writes none; falcosidekick assigns it
    assert falco_priority("INFORMATIONAL") == "Informational"
    assert rfc3339_ns(1) == "1970-01-01T00:00:00.000000001Z"


def test_only_detections_become_alerts() -> None:
    req = _documented_2023()  # the trigger exec record and its detection
    assert sum(len(sl.log_records) for rl in req.resource_logs for sl in rl.scope_logs) == 2
    assert len(falco_alerts(req, "h")) == 1


def test_falco_json_file_and_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "alerts.json"
    t = parse_spec(f"falco-json:{path}")
    assert t.export_logs(_documented_2023()).ok
    assert t.export_traces(b"").ok
    t.shutdown()
    lines = path.read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["rule"] == "Terminal shell in container"
    assert path.stat().st_mode & 0o777 == 0o600
    out = parse_spec("falco-json:-")
    assert out.export_logs(_documented_2023()).ok
    out.shutdown()
    printed = capsys.readouterr().out.splitlines()
    assert [json.loads(x)["priority"] for x in printed] == ["Critical"]


@pytest.fixture
def sidekick() -> Any:
    s = Sidekick()
    yield s
    s.stop()


def test_falcosidekick_receives_each_alert_field_by_field(sidekick: Sidekick) -> None:
    t = parse_spec(f"falcosidekick:{sidekick.url}?insecure=true")
    result = t.export_logs(_documented_2023())
    assert result.ok and result.rejected == 0, result
    assert sidekick.rejected == [] and len(sidekick.accepted) == 1
    assert sidekick.content_types == ["application/json"]
    want = json.loads((GOLDEN / "falco_terminal_shell.json").read_text())
    got = sidekick.accepted[0]
    for key in ("hostname", "priority", "rule", "source", "tags", "time"):
        assert got[key] == want[key], key
    assert got["output_fields"] == want["output_fields"]
    assert got["output"].endswith(want["output"].split(": ", 1)[1])


def test_falcosidekick_plaintext_needs_explicit_insecure(sidekick: Sidekick) -> None:
    with pytest.raises(SpecError, match="plaintext"):
        parse_spec(f"falcosidekick:{sidekick.url}")
    assert parse_spec(f"falcosidekick:{sidekick.url}", tls=INSECURE_CLIENT).name.startswith(
        "falcosidekick:")


def test_falcosidekick_retry_delivers_once_and_refusals_are_counted(sidekick: Sidekick) -> None:
    """Down: the Delivery retries and nothing is lost; back up: each alert arrives once;
    an alert the receiver refuses for good is one counted drop, not the whole batch."""
    two = _documented_2023()
    two.resource_logs.extend(_documented_2019().resource_logs)
    sidekick.fail_status = 503
    before = telemetry.counter_values(telemetry.dropped).get(("output", "rejected"), 0)
    delivery = Delivery(FalcosidekickTransport(sidekick.url, 2.0, tls=INSECURE_CLIENT),
                        None, stage="output", sleep=lambda s: None)
    assert not delivery.send("logs", two, 4)  # no spool: counted as unavailable
    assert sidekick.accepted == []
    sidekick.fail_status = None
    t = FalcosidekickTransport(sidekick.url, 2.0, tls=INSECURE_CLIENT)
    sidekick.reject_rules = set()
    # a receiver that fails after the first alert: the retry must not resend the first
    calls = {"n": 0}
    original = t._http.send

    def flaky(path: str, body: bytes, content_type: str) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            sidekick.fail_status = 502
        result = original(path, body, content_type)
        sidekick.fail_status = None
        return result

    t._http.send = flaky  # type: ignore[method-assign]  # a receiver failing mid-batch
    first = t.export_logs(two)
    assert not first.ok and first.retryable
    assert t.export_logs(two).ok
    times = sorted(a["time"] for a in sidekick.accepted)
    assert times == ["2019-01-09T08:58:36.335246440Z", "2023-05-25T13:44:05.478445995Z"]
    # a permanent refusal of one alert: success with one rejection, counted as one drop
    sidekick.accepted.clear()
    rejected_delivery = Delivery(FalcosidekickTransport(sidekick.url, 2.0, tls=INSECURE_CLIENT),
                                 None, stage="output", sleep=lambda s: None)
    sidekick.reject_rules = {"Terminal shell in container"}
    rejected_delivery.send("logs", _documented_2023(), 2)
    after = telemetry.counter_values(telemetry.dropped).get(("output", "rejected"), 0)
    assert after - before == 1
    assert sidekick.accepted == []


def _alert_batch(priority: str, tags: list[str]) -> ExportLogsServiceRequest:
    rule = RULE.replace("CRITICAL", priority).replace(
        "[shell, mitre_execution, container]", "[" + ", ".join(tags) + "]")
    return _detections(rule, _exec(
        1685022245478445995, {S.HOST_NAME: "h"}, ["sh", "-i"], None, None))


@pytest.mark.parametrize("option, priority, tags, shown", [
    ("min_priority=warning", "CRITICAL", ["shell"], True),
    ("min_priority=warning", "WARNING", ["shell"], True),
    ("min_priority=warning", "NOTICE", ["shell"], False),
    ("min_priority=info", "INFORMATIONAL", ["shell"], True),
    ("min_priority=info", "DEBUG", ["shell"], False),
    ("tags=network,shell", "DEBUG", ["shell"], True),
    ("tags=network", "DEBUG", ["shell"], False),
    ("exclude_tags=shell", "CRITICAL", ["shell"], False),
    ("min_priority=error&exclude_tags=network", "CRITICAL", ["shell"], True),
])
def test_output_filters(option: str, priority: str, tags: list[str], shown: bool) -> None:
    stream = io.StringIO()
    base, options = split_options(f"console?{option}")
    assert base == "console"
    t = FilteredTransport(ConsoleTransport(stream, colour=False), options.filter)
    assert t.export_logs(_alert_batch(priority, tags)).ok
    lines = stream.getvalue().splitlines()
    assert ("Terminal shell in container" in stream.getvalue()) is shown
    assert not any("process.exec" in line for line in lines)  # events never pass a filter


def test_filter_spec_errors_name_the_cause() -> None:
    with pytest.raises(SpecError, match="unknown option 'min_prio'.*min_priority"):
        parse_spec("console?min_prio=warning")
    with pytest.raises(SpecError, match="not a Falco priority"):
        parse_spec("console?min_priority=loud")
    with pytest.raises(SpecError, match="insecure applies to"):
        parse_spec("console?insecure=true")
    assert RecordFilter().active is False
    assert isinstance(parse_spec("console?min_priority=warn"), FilteredTransport)
