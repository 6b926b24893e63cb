"""``otelguard run``'s console: incidents as boxed stories; the exit summary lists them."""

from __future__ import annotations

import io

from otelguard import semconv as S
from otelguard.processors.incidents import Config, IncidentsStage
from otelguard.processors.pipeline import Pipeline
from otelguard.runner import incident_lines, run_specs, summary
from otelguard.transport.console import BOX_WIDTH, ConsoleTransport
from tests.support.incidents import batch, detection, event, pod, trace


def _stage_with_one_incident(cmdline: str) -> IncidentsStage:
    stage = IncidentsStage(Config(), clock=lambda: 1000.0)
    rd = event(S.EV_FILE_OPEN, 201, trace("box"), ppid=200, attrs={
        S.PROCESS_EXECUTABLE_PATH: "/bin/cat", S.PROCESS_COMMAND_LINE: cmdline,
        S.FILE_PATH: "/etc/shadow", S.FILE_OPEN_FLAGS: "O_RDONLY"})
    stage.process(batch(pod(), [rd], [detection(rd, "Read sensitive file untrusted", 17,
                                                "credential_access", "T1555")]))
    return stage


def test_an_incident_prints_as_a_box_with_escaped_values() -> None:
    stage = _stage_with_one_incident("cat /etc/shadow \x1b[2J\nFAKE LINE " + "x" * 150)
    out = io.StringIO()
    console = ConsoleTransport(out, colour=False, detections_only=True)
    assert console.export_logs(stage.drain(False)[0]).ok
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("┌─ INCIDENT ERROR v1 open (template)")
    assert lines[-1].startswith("└") and all(len(x) == BOX_WIDTH for x in lines)
    assert all(x.startswith("│ ") for x in lines[1:-1])
    text = out.getvalue()
    assert "\x1b" not in text and "\\x1b[2J" in text  # a forged escape sequence shows as text
    assert not any(x.startswith("FAKE LINE") for x in lines)
    coloured = io.StringIO()
    ConsoleTransport(coloured, colour=True).export_logs(
        _stage_with_one_incident("cat /etc/shadow").drain(False)[0])
    assert coloured.getvalue().startswith("\x1b[31m┌─ INCIDENT ERROR")


def test_otelguard_run_adds_the_stage_and_its_summary_lists_incidents() -> None:
    specs = run_specs(None, None)
    assert [s.type for s in specs][-2:] == ["noise_control", "incidents"]
    assert [s.type for s in run_specs(None, None, incidents=False)][-1] == "noise_control"
    stage = _stage_with_one_incident("cat /etc/shadow")
    stage.drain(False)
    lines = incident_lines(Pipeline([("incidents", stage)]))
    assert lines[0] == "  incidents: 1"
    assert lines[1].split()[:3] == ["ERROR", "open", "v1"]
    assert "cat read /etc/shadow" in lines[1]
    assert "  incidents: 1" in summary({}, [], lines)
