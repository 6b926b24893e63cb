"""`otelguard policy validate` and `policy test` on a real tree (testdata/tree) and captures
written by the real jsonl output (processors/policy, docs/policy.md)."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path
from typing import Optional

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otelguard import semconv as S
from otelguard.cli import build_parser
from otelguard.cli import main as otelguard_main
from otelguard.config import ConfigError, InvalidFields
from otelguard.otlp.messages import attrs_dict, set_attrs
from otelguard.processors import metrics
from otelguard.processors.detection.processor import Config, FalcoRulesProcessor, create
from otelguard.processors.cli import resolve_config
from otelguard.processors.policy.tree import load_tree
from otelguard.runner import run_specs
from otelguard.transport.jsonlines import JsonLinesTransport

TREE = Path(__file__).parent / "testdata" / "tree"
CONTAINER = "ab" * 32


def _open(sl: object, uid: str, exe: str, path: str) -> None:
    rec = sl.log_records.add()  # type: ignore[attr-defined]
    rec.event_name = S.EV_FILE_OPEN
    set_attrs(rec.attributes, {S.SYSCALL_NAME: "openat", S.FILE_PATH: path,
                               S.PROCESS_EXECUTABLE_NAME: exe, S.PROCESS_PID: 10,
                               S.LOG_RECORD_UID: uid})


def _exec(sl: object, uid: str, exe: str) -> None:
    rec = sl.log_records.add()  # type: ignore[attr-defined]
    rec.event_name = S.EV_PROCESS_EXEC
    set_attrs(rec.attributes, {S.SYSCALL_NAME: "execve", S.PROCESS_EXECUTABLE_NAME: exe,
                               S.PROCESS_EXECUTABLE_PATH: f"/bin/{exe}", S.PROCESS_PID: 11,
                               S.LOG_RECORD_UID: uid})


def capture(path: Path) -> Path:
    """Two requests as `--output jsonl:` writes them: container records (one already
    followed by a detection of an earlier pipeline, which a replay must ignore) and host ones."""
    in_container = ExportLogsServiceRequest()
    rl = in_container.resource_logs.add()
    set_attrs(rl.resource.attributes, {S.CONTAINER_ID: CONTAINER, S.HOST_NAME: "node-1"})
    sl = rl.scope_logs.add()
    _open(sl, "cat-shadow", "cat", "/etc/shadow")
    _open(sl, "backup-shadow", "backup-agent", "/etc/shadow")  # excepted
    _open(sl, "backup-gshadow", "backup-agent", "/etc/gshadow")  # the exception is the pair
    _open(sl, "auditor-shadow", "auditor", "/etc/shadow")  # its exception expired
    _open(sl, "cat-passwd", "cat", "/etc/passwd")
    _exec(sl, "sh-in-container", "sh")
    old = in_container.resource_logs.add()  # an earlier pipeline's detection
    set_attrs(old.resource.attributes, {S.STREAM: S.STREAM_DETECTION, S.CONTAINER_ID: CONTAINER})
    det = old.scope_logs.add().log_records.add()
    det.event_name = S.EV_DETECTION
    set_attrs(det.attributes, {S.SECURITY_RULE_NAME: "Read shadow file"})
    on_host = ExportLogsServiceRequest()
    rl = on_host.resource_logs.add()
    set_attrs(rl.resource.attributes, {S.HOST_NAME: "node-1", S.HOST_PROCESS: True})
    _exec(rl.scope_logs.add(), "sh-on-host", "sh")
    out = JsonLinesTransport(str(path))
    for req in (in_container, on_host):
        assert out.export_logs(req).ok
    out.shutdown()
    return path


EXPECTED = """\
detections:
  - {rule: Read shadow file, record: cat-shadow, priority: WARNING}
  - {rule: Read shadow file, record: backup-gshadow}
  - {rule: Read shadow file, record: auditor-shadow}
  - {rule: Shell in workload}
"""


def run(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = otelguard_main(list(argv))
    return code, capsys.readouterr().out


def test_validate_checks_every_kind_and_names_the_revision(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run("policy", "validate", str(TREE), capsys=capsys)
    tree = load_tree(TREE)
    assert code == 0, out
    assert f"revision {tree.revision}" in out and len(tree.revision) == 12
    assert "LOADED    Read shadow file" in out and "LOADED    Shell in workload" in out
    assert "ACTIVE    exception backup-agent-reads-shadow" in out
    assert "EXPIRED   exception audit-tool-2020" in out and "expired on 2020-06-30" in out
    assert "PROFILE   k8s/shop/Deployment/cart/web" in out
    assert "RESPONSE  label-shadow-readers" in out
    assert metrics.exceptions_expired._value.get() == 1


def test_revision_is_the_content_not_the_place(tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(TREE, copy)
    (copy / "NOTES.md").write_text("docs do not change the policy\n")
    (copy / "tests").mkdir(exist_ok=True)
    (copy / "tests" / "x.jsonl").write_text("\n")
    assert load_tree(copy).revision == load_tree(TREE).revision
    rules = copy / "rules" / "files.yaml"
    rules.write_text(rules.read_text().replace("priority: NOTICE", "priority: ERROR"))
    assert load_tree(copy).revision != load_tree(TREE).revision


def test_an_exception_applies_until_its_last_day() -> None:
    before = load_tree(TREE, today=date(2020, 6, 30))
    after = load_tree(TREE, today=date(2020, 7, 1))
    assert [e.name for e in before.exceptions] == ["backup-agent-reads-shadow",
                                                    "audit-tool-2020"]
    assert [e.name for e in after.expired] == ["audit-tool-2020"]


def _broken(tmp_path: Path) -> Path:
    root = tmp_path / "broken"
    shutil.copytree(TREE, root)
    (root / "exceptions" / "more.yaml").write_text(
        "apiVersion: otelguard.dev/v1alpha1\nkind: RuleException\nmetadata: {name: m}\n"
        "spec:\n  owner: ''\n  expires: soon\n  rule: Read shadow file\n"
        "  fields: [proc.nmae]\n  values: [[x]]\n---\n"
        "apiVersion: otelguard.dev/v1alpha1\nkind: RuleException\nmetadata: {name: n}\n"
        "spec:\n  owner: me\n  expires: 2099-01-01\n  rule: No such rule\n"
        "  fields: [proc.name]\n  values: [[x]]\n")
    (root / "responses" / "bad.yaml").write_text(
        "apiVersion: otelguard.dev/v1alpha1\nkind: ResponsePolicy\nmetadata: {name: b}\n"
        "spec:\n  match: {}\n  actions: [{action: nuke_cluster}]\n")
    (root / "profiles" / "bad.yaml").write_text("kind: WorkloadProfile\n")
    (root / "rules" / "notes.txt").write_text("not a rules file\n")
    (root / "sigma").mkdir()
    return root


def test_validate_reports_every_problem_of_every_kind_with_file_and_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _broken(tmp_path)
    code, out = run("policy", "validate", str(root), capsys=capsys)
    assert code == 1
    more, resp = root / "exceptions" / "more.yaml", root / "responses" / "bad.yaml"
    for line in (f"{more}:5: [0].spec.owner: must name who owns the exception",
                 f"{more}:6: [0].spec.expires: must be a date YYYY-MM-DD, got 'soon'",
                 f"{more}:11: error: rule 'No such rule': append/override of a rule that is "
                 "not defined",
                 f"{resp}:6: spec.actions[0].action: unknown action 'nuke_cluster'",
                 f"{root / 'profiles' / 'bad.yaml'}:1: apiVersion: required key is missing",
                 f"{root / 'rules' / 'notes.txt'}: rules: unknown file",
                 f"{root / 'sigma'}: sigma: unknown entry"):
        assert line in out, (line, out)


def test_an_unknown_field_is_located_in_the_exception(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "t"
    shutil.copytree(TREE, root)
    f = root / "exceptions" / "backup.yaml"
    f.write_text(f.read_text().replace("fields: [proc.name, fd.name]",
                                       "fields: [proc.nmae, fd.name]"))
    code, out = run("policy", "validate", str(root), capsys=capsys)
    assert code == 1
    assert f"{f}:2: spec.fields[0]: unknown field proc.nmae" in out
    assert "LOADED    Read shadow file" in out  # the rule itself is fine


def test_replay_prints_the_trees_detections(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cap = capture(tmp_path / "capture.jsonl")
    code, out = run("policy", "test", str(TREE), "--replay", str(cap), capsys=capsys)
    assert code == 0, out
    lines = [line.split() for line in out.splitlines()[1:]]
    assert sorted((p, " ".join(r[:-1]), r[-1]) for p, *r in lines) == [
        ("NOTICE", "Shell in workload", "record=sh-in-container"),
        ("WARNING", "Read shadow file", "record=auditor-shadow"),
        ("WARNING", "Read shadow file", "record=backup-gshadow"),
        ("WARNING", "Read shadow file", "record=cat-shadow"),
    ]
    assert "7 record(s) replayed, 4 detection(s)" in out


@pytest.mark.parametrize("expected, code, verdict", [
    (EXPECTED, 0, "PASS: 4 expected, 0 missing, 0 unexpected"),
    (EXPECTED + "  - {rule: Read shadow file, record: backup-shadow}\n", 1,
     "FAIL: 5 expected, 1 missing, 0 unexpected"),
    ("\n".join(EXPECTED.splitlines()[:-1]) + "\n", 1,
     "FAIL: 3 expected, 0 missing, 1 unexpected"),
])
def test_replay_checks_the_expected_detections(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], expected: str, code: int,
        verdict: str) -> None:
    cap = capture(tmp_path / "capture.jsonl")
    exp = tmp_path / "expected.yaml"
    exp.write_text(expected)
    got, out = run("policy", "test", str(TREE), "--replay", str(cap), "--expect", str(exp),
                   capsys=capsys)
    assert (got, verdict in out) == (code, True), out
    if "missing" in verdict and code:
        assert ("MISSING    * Read shadow file record=backup-shadow" in out) == \
            ("1 missing" in verdict)


@pytest.mark.parametrize("content, message", [
    ("not json\n", "capture.jsonl:1: not JSON"),
    ('{"resourceLogs": [{"resource": {"attributes": 5}}]}\n', "capture.jsonl:1: bad OTLP/JSON"),
    ('{"foo": 1}\n', "capture.jsonl:1: not an OTLP/JSON logs request"),
])
def test_a_bad_capture_is_named_with_its_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str,
        message: Optional[str]) -> None:
    cap = tmp_path / "capture.jsonl"
    cap.write_text(content)
    assert otelguard_main(["policy", "test", str(TREE), "--replay", str(cap)]) == 2
    assert message in capsys.readouterr().err


def _batch(exe: str) -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    set_attrs(rl.resource.attributes, {S.CONTAINER_ID: CONTAINER})
    _open(rl.scope_logs.add(), f"{exe}-shadow", exe, "/etc/shadow")
    return req


def _fired(stage: FalcoRulesProcessor, exe: str) -> list[dict[str, object]]:
    out = stage.process(_batch(exe))
    assert isinstance(out, ExportLogsServiceRequest)
    return [attrs_dict(r.attributes) for rl in out.resource_logs for sl in rl.scope_logs
            for r in sl.log_records if r.event_name == S.EV_DETECTION]


def test_the_stage_runs_the_tree_as_one_revision_and_reloads_its_exceptions(
        tmp_path: Path) -> None:
    root = tmp_path / "tree"
    shutil.copytree(TREE, root)
    stage = create(Config(policy_dir=str(root)))
    revision = load_tree(root).revision
    assert stage.rules_info() == (revision, 2)
    assert stage.watched_files() == tuple(str(root / k) for k in
                                          ("rules", "exceptions", "profiles", "responses"))
    assert _fired(stage, "backup-agent") == []  # excepted
    [det] = _fired(stage, "cat")
    assert det[S.SECURITY_RULE_NAME] == "Read shadow file"
    assert det[S.POLICY_REVISION] == revision
    f = root / "exceptions" / "backup.yaml"
    f.write_text(f.read_text().replace("expires: 2099-12-31", "expires: 2021-01-31"))
    stage.prepare(Config(policy_dir=str(root)))()  # what a reload does
    [det] = _fired(stage, "backup-agent")  # the expired exception no longer applies
    assert det[S.POLICY_REVISION] == load_tree(root).revision != revision
    assert metrics.exceptions_expired._value.get() == 2


def test_the_stage_refuses_a_tree_that_does_not_validate(tmp_path: Path) -> None:
    root = _broken(tmp_path)
    with pytest.raises(ConfigError) as err:
        create(Config(policy_dir=str(root)))
    assert "[0].spec.owner: must name who owns the exception" in str(err.value)
    with pytest.raises(InvalidFields, match="not with rules or local_rules"):
        Config(policy_dir=str(root), rules=("x.yaml",))


def test_run_policy_points_every_rules_stage_at_the_tree() -> None:
    specs = run_specs(None, None, policy=str(TREE))
    [rules] = [s for s in specs if s.type == "falco_rules"]
    assert (rules.config.policy_dir, rules.config.rules) == (str(TREE), ())
    stage = create(rules.config)
    assert stage.rules_info() == (load_tree(TREE).revision, 2)
    with pytest.raises(ConfigError, match="--policy: not with --rules"):
        run_specs(None, ["x.yaml"], policy=str(TREE))


def test_processor_policy_flag_reaches_the_rules_stage() -> None:
    args = build_parser().parse_args(["processor", "--policy", str(TREE),
                                      "--export", "jsonl:-"])
    [rules] = [s for s in resolve_config(args).processors if s.type == "falco_rules"]
    assert rules.config.policy_dir == str(TREE)
