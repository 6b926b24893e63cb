"""No forged log lines: a process named or run with a newline, an ANSI sequence or a Unicode line
separator prints as one console line with those characters escaped, and the JSON lines output
stays one object per line holding the exact values."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otelguard import semconv as sc
from otelguard.exporter.builder import OtlpBuilder
from otelguard.exporter.settings import NodeIdentity
from otelguard.otlp.messages import set_attrs
from otelguard.transport.console import ConsoleTransport
from otelguard.transport.controls import visible
from otelguard.transport.jsonlines import JsonLinesTransport
from tests.exporter.scenario import ev, proc_attrs

FORGED = "\n13:08:51 !! CRITICAL Terminal shell in container prod/web sh[1]: all clear"
ANSI = "\x1b[2J\x1b[1;31mfake alert\x1b[0m"
OTHERS = "\r\u2028\x85\u202etxt.exe\x9b31m\x07\x00"
EXE = "sh" + FORGED
CMDLINE = f"sh -c 'echo {ANSI}'{OTHERS}"
PATH = "/tmp/" + FORGED + ANSI + OTHERS


def _hostile() -> ExportLogsServiceRequest:
    """An exec and a file open by a process with a hostile name, argv and path, and the
    detection a rule raised on it (its output quotes the command line)."""
    proc = {**proc_attrs(4242, 1, EXE, "/bin/" + EXE), sc.PROCESS_COMMAND_LINE: CMDLINE}
    events = [
        ev(sc.EV_PROCESS_EXEC, 0, 4242, "execve", 0, proc, body=f"exec {CMDLINE}"),
        ev(sc.EV_FILE_OPEN, 1000, 4242, "openat", 3, {**proc, sc.FILE_PATH: PATH}),
    ]
    req = OtlpBuilder(NodeIdentity("n", "h", "i"), clock=lambda: 1).logs(events)
    records = req.resource_logs[0].scope_logs[0].log_records
    det = records.add()
    det.CopyFrom(records[0])
    det.event_name = sc.EV_DETECTION
    det.body.string_value = f"Shell spawned in a container (cmdline={CMDLINE} file={PATH})"
    set_attrs(det.attributes, {sc.SECURITY_RULE_NAME: "Terminal shell" + FORGED,
                               sc.SECURITY_RULE_PRIORITY: "WARNING",
                               sc.THREAT_TACTIC_NAME: ["execution" + ANSI]})
    return req


def _record_count(req: ExportLogsServiceRequest) -> int:
    return sum(len(sl.log_records) for rl in req.resource_logs for sl in rl.scope_logs)


def test_visible_escapes_controls_separators_and_bidi_and_nothing_else() -> None:
    assert visible("a\nb\rc\td") == "a\\nb\\rc\\td"
    assert visible("\x1b[31m\x00\x7f\x85\x9b") == "\\x1b[31m\\x00\\x7f\\x85\\x9b"
    assert visible("\u2028\u2029\u202e\u2066") == "\\u2028\\u2029\\u202e\\u2066"
    plain = "/usr/bin/café --x=\\n ü 日本"  # printable text, a backslash included, as it is
    assert visible(plain) is plain


@pytest.mark.parametrize("colour", [False, True])
def test_hostile_argv_and_paths_print_one_escaped_console_line_per_record(colour: bool) -> None:
    req = _hostile()
    out = io.StringIO()
    assert ConsoleTransport(out, colour=colour).export_logs(req.SerializeToString()).ok
    text = out.getvalue()
    lines = text.split("\n")[:-1]
    assert text.endswith("\n") and len(lines) == _record_count(req) == 3
    assert text.splitlines() == lines  # no \r, U+2028, NEL, ... for any line splitter either
    # the only escape sequences written are the detection colour's own
    assert text.count("\x1b") == (2 if colour else 0)
    assert not any(ch in text for ch in "\x00\x07\x85\x9b\u2028\u202e")
    clock = lines[0].split(" ", 1)[0]
    assert sum(line.startswith(f"{clock} !! ") or line.startswith(f"{clock} \x1b[")
               for line in lines) == 1  # one detection line, and it is the real one
    exec_line, open_line, det_line = lines
    assert "sh\\n13:08:51 !! CRITICAL" in exec_line  # the name, cut to 24 characters
    assert "path=/tmp/\\n13:08:51 !! CRITICAL Terminal shell in container prod/web" in open_line
    assert "\\x1b[2J\\x1b[1;31mfake alert\\x1b[0m\\r\\u2028\\x85\\u202etxt.exe\\x9b31m" in open_line
    assert "!! WARNING Terminal shell\\n13:08:51 !! CRITICAL" in det_line
    assert "cmdline=sh -c 'echo \\x1b[2J" in det_line and "[execution\\x1b[2J" in det_line


def test_hostile_values_keep_json_lines_one_object_per_line_with_exact_values(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    t = JsonLinesTransport(str(path))
    req = _hostile()
    assert t.export_logs(req).ok and t.export_logs(req.SerializeToString()).ok
    t.shutdown()
    text = path.read_text(encoding="utf-8")
    assert text.count("\n") == 2 and len(text.splitlines()) == 2
    assert not any(ch in text for ch in "\x1b\x00\x85\x9b\u2028\u2029\u202e")
    for line in text.splitlines():
        records = [rec for rl in json.loads(line)["resourceLogs"]
                   for sl in rl["scopeLogs"] for rec in sl["logRecords"]]
        values = {a["key"]: a["value"].get("stringValue") for a in records[1]["attributes"]}
        assert values[sc.FILE_PATH] == PATH and values[sc.PROCESS_COMMAND_LINE] == CMDLINE
        assert values[sc.PROCESS_EXECUTABLE_NAME] == EXE
        assert records[2]["body"]["stringValue"].endswith(f"file={PATH})")
