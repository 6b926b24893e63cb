"""The condition language: every operator, transformer, field argument, CIDR and flag-set
semantics, missing-value semantics, lists/macros/override/append/exceptions, and errors with
file and line. Records are real OTLP protobufs built by casefile."""

from __future__ import annotations

import pytest

from otelguard.processors.detection.engine import RuleEngine
from otelguard.processors.detection.loader import load_rules_text
from otelguard.processors.detection.parser import ConditionSyntaxError, parse_condition

from .casefile import batch_of
from .records import CONNECT, EXEC, OPEN, fires


@pytest.mark.parametrize("cond,expected", [
    # = != and string operators
    ("proc.name = bash", True), ("proc.name == bash", True), ("proc.name = sh", False),
    ("proc.name != sh", True), ("proc.name != bash", False),
    ("proc.cmdline contains base64", True), ("proc.cmdline contains BASE64", False),
    ("proc.cmdline icontains BASE64", True), ("proc.exe startswith bas", True),
    ("proc.exepath endswith /bash", True), ("proc.exepath endswith /sh", False),
    ("proc.exepath glob '/usr/*/ba?h'", True), ("proc.exepath glob '/usr/*/z*'", False),
    ("proc.exepath iglob '/USR/*'", True),
    ("proc.exepath pmatch (/usr, /opt)", True), ("proc.exepath pmatch (/us)", False),
    ("proc.exepath regex '/usr/bin/[a-z]+'", True), ("proc.exepath regex 'bin'", False),
    ("proc.name in (sh, bash)", True), ("proc.name in (sh, zsh)", False),
    ("proc.name in ((sh), (zsh, bash))", True), ("proc.name in ('bash')", True),
    ("proc.name intersects (bash)", True),
    ("proc.name bcontains 6173", True), ("proc.name bstartswith 62", True),
    ("proc.name bstartswith 63", False),
    # numbers
    ("user.uid = 1000", True), ("user.uid < 1001", True), ("user.uid <= 1000", True),
    ("user.uid > 1000", False), ("user.uid >= 1000", True), ("user.uid in (0, 1000)", True),
    ("proc.pid = 0x1092", True),
    # exists and missing values (missing: every operator false, including !=)
    ("proc.pname exists", True), ("proc.sname exists", False),
    ("proc.sname != x", False), ("not proc.sname = x", True), ("proc.sname in (x)", False),
    # boolean logic, precedence, short circuit
    ("proc.name = sh or proc.name = bash and user.uid = 1000", True),
    ("(proc.name = sh or proc.name = bash) and user.uid = 0", False),
    ("not not proc.name = bash", True), ("not (proc.name = bash)", False),
    # transformers
    ("tolower(user.name) = alice", True), ("toupper(user.name) = ALICE", True),
    ("basename(proc.exepath) = bash", True), ("len(proc.name) = 4", True),
    ("len(proc.name) > 4", False), ("b64(proc.exe) exists", True),
    ("tolower(toupper(user.name)) = alice", True),
    # field arguments: aname[N], any ancestor, parent
    ("proc.aname[0] = bash", True), ("proc.aname[1] = python3", True),
    ("proc.aname[2] = gunicorn", True), ("proc.aname[3] = containerd-shim", True),
    ("proc.aname[4] exists", False), ("proc.aname = gunicorn", True),
    ("proc.aname in (nginx, gunicorn)", True), ("proc.aname = bash", False),
    ("proc.pname = python3", True), ("proc.pexe = /usr/bin/python3", True),
    ("proc.pcmdline = 'python3 /srv/app.py --port 80'", True),
    ("proc.cwd = /dev/shm/", True), ("proc.args startswith '-c echo'", True),
    # flag / capability sets
    ("thread.cap_effective contains CAP_SYS_ADMIN", True),
    ("thread.cap_effective icontains sys_admin", True),
    ("thread.cap_effective contains CAP_SYS_MODULE", False),
    # comparing two fields
    ("proc.name = val(proc.aname[0])", True), ("proc.name = val(proc.pname)", False),
])
def test_operator(cond: str, expected: bool) -> None:
    assert fires(cond) is expected


@pytest.mark.parametrize("cond,expected", [
    ("fd.net = 192.168.0.0/16", True), ("fd.net = 172.16.0.0/12", False),
    ("fd.snet in (\"10.0.0.0/8\", \"192.168.0.0/16\")", True),
    ("fd.cnet in (\"10.0.0.0/8\")", True), ("fd.cnet in (\"192.168.0.0/16\")", False),
    ("fd.net != \"127.0.0.0/8\"", True), ("fd.ip = 10.1.2.3", True), ("fd.ip != 0.0.0.0", True),
    ("fd.sip = 192.168.7.9", True), ("fd.sip in (192.168.0.0/16)", True),
    ("fd.cip = 10.1.2.3", True), ("fd.lip = 10.1.2.3", True), ("fd.rip = 192.168.7.9", True),
    ("fd.sport = 5432", True), ("fd.cport = 40000", True), ("fd.lport = 40000", True),
    ("fd.rport = 5432", True), ("fd.port = 5432", True), ("fd.port = 1", False),
    ("fd.lnet = 10.0.0.0/8", True), ("fd.rnet = 10.0.0.0/8", False),
    ("fd.typechar = 4", True), ("fd.type = ipv4", True), ("fd.l4proto = tcp", True),
    ("fd.sockfamily = ip", True), ("fd.connected = true", True),
    ("fd.name = '10.1.2.3:40000->192.168.7.9:5432'", True), ("fd.is_server = false", True),
    ("evt.res = EINPROGRESS", True), ("evt.rawres = -115", True), ("evt.failed = true", True),
    ("evt.type = connect", True), ("evt.dir = '<'", True),
])
def test_network_fields(cond: str, expected: bool) -> None:
    assert fires(cond, CONNECT) is expected


@pytest.mark.parametrize("cond,expected", [
    ("evt.arg.flags contains O_TRUNC", True), ("evt.arg[flags] contains O_CREAT", True),
    ("evt.arg.flags contains O_APPEND", False), ("evt.is_open_write = true", True),
    ("evt.is_open_read = true", False), ("evt.is_open_create = true", True),
    ("evt.is_open_exec = false", False),  # O_CREAT without a mode: unknown
    ("fd.num = -1", True), ("evt.res startswith E", True), ("evt.res = ENOENT", True),
    ("fd.typechar = f", True), ("fd.directory = /etc", True), ("fd.filename = ld.so.preload", True),
    ("fd.nameraw = /etc/ld.so.preload", True), ("fd.name pmatch (/etc)", True),
])
def test_file_fields(cond: str, expected: bool) -> None:
    assert fires(cond, OPEN) is expected


def test_lists_macros_override_append_and_exceptions() -> None:
    base = """
- list: shells
  items: [sh]
- list: more_shells
  items: [shells, zsh]
- macro: is_shell
  condition: proc.name in (more_shells)
- rule: shell
  desc: d
  condition: is_shell
  output: o
  priority: WARNING
  exceptions:
    - name: known_users
      fields: [user.name, proc.pname]
      values: [[bob, sshd]]
"""
    local = """
- list: shells
  items: [bash]
  override:
    items: append
- macro: is_shell
  condition: and user.uid = 1000
  override:
    condition: append
- rule: shell
  exceptions:
    - name: known_users
      values: [[Alice, python3]]
  override:
    exceptions: append
"""
    def names(*files: tuple[str, str]) -> list[str]:
        engine = RuleEngine.from_text(*files)
        return [d.rule.name for d in engine.evaluate(batch_of(EXEC))]

    assert names(("base.yaml", base)) == []  # bash is not in the lists yet
    base_plus = ("base.yaml", base), ("local.yaml", local.split("- rule: shell")[0])
    assert names(*base_plus) == ["shell"]
    assert names(("base.yaml", base), ("local.yaml", local)) == []  # exception now covers Alice
    legacy = """
- list: shells
  items: [bash]
  append: true
- rule: shell
  condition: and proc.pname = python3
  append: true
- rule: shell
  enabled: false
"""
    rs = load_rules_text([("base.yaml", base), ("legacy.yaml", legacy)])
    assert rs.ok and [s.state for s in rs.statuses] == ["disabled"]
    replace = """
- rule: shell
  condition: proc.name = bash
  priority: CRITICAL
  override: {condition: replace, priority: replace}
"""
    engine = RuleEngine.from_text(("base.yaml", base), ("r.yaml", replace))
    assert engine.rules[0].priority.name == "CRITICAL"


def test_single_field_exception_with_list_reference() -> None:
    extra = """
- list: allowed
  items: [python3, node]
"""
    text = extra + """
- rule: t
  desc: d
  condition: proc.name = bash
  output: o
  priority: INFO
  exceptions:
    - name: parents
      fields: proc.pname
      comps: in
      values: [allowed]
"""
    engine = RuleEngine.from_text(("t.yaml", text))
    assert engine.evaluate(batch_of(EXEC)) == []


def test_errors_carry_file_line_and_item() -> None:
    text = """- macro: m
  condition: proc.name = bash
- rule: bad syntax
  desc: d
  condition: proc.name = (bash
  output: o
  priority: WARNING
- rule: undefined macro
  desc: d
  condition: nope_macro and m
  output: o
  priority: WARNING
- rule: bad priority
  desc: d
  condition: m
  output: o
  priority: LOUD
- rule: missing keys
  condition: m
- bogus: 1
- rule: bad number
  desc: d
  condition: user.uid = abc
  output: o
  priority: INFO
"""
    rs = load_rules_text([("rules.yaml", text)])
    assert not rs.ok
    got = {(e.line, e.item) for e in rs.errors}
    assert (3, "rule 'bad syntax'") in got
    assert (8, "rule 'undefined macro'") in got
    assert (13, "rule 'bad priority'") in got
    assert (18, "rule 'missing keys'") in got
    assert (20, "") in got
    assert (21, "rule 'bad number'") in got
    assert all(e.file == "rules.yaml" for e in rs.errors)
    assert "undefined macro 'nope_macro'" in str(rs.errors[1]) or any(
        "nope_macro" in str(e) for e in rs.errors)
    with pytest.raises(Exception) as info:
        RuleEngine(rs)
    assert "rules.yaml:3" in str(info.value)


def test_yaml_error_is_located() -> None:
    rs = load_rules_text([("broken.yaml", "- rule: x\n  desc: [unclosed\n")])
    assert not rs.ok and rs.errors[0].file == "broken.yaml" and rs.errors[0].line


def test_unavailable_field_cannot_run_and_unknown_field_is_an_error() -> None:
    text = """
- rule: needs env
  desc: d
  condition: not thread.cap_inheritable contains SECRET
  output: o
  priority: INFO
"""
    rs = load_rules_text([("t.yaml", text)])
    assert rs.ok
    cannot = {s.name: s.reason for s in rs.statuses if s.state == "cannot-run"}
    assert "thread.cap_inheritable" in cannot["needs env"]
    assert any("thread.cap_inheritable" in str(w) for w in rs.warnings)
    assert RuleEngine(rs).evaluate(batch_of(EXEC)) == []
    unknown = text.replace("needs env", "unknown field").replace("thread.cap_inheritable contains SECRET",
                                                                 "proc.flux_capacitor = 1")
    rs = load_rules_text([("t.yaml", unknown)])
    assert not rs.ok and "proc.flux_capacitor" in rs.errors[0].message
    assert rs.errors[0].line == 2


def test_parser_errors_have_offsets() -> None:
    with pytest.raises(ConditionSyntaxError) as info:
        parse_condition("proc.name = bash and (")
    assert info.value.offset == 22
    with pytest.raises(ConditionSyntaxError):
        parse_condition("proc.name in /bin/bash")  # libs: a list, an identifier or a field
    with pytest.raises(ConditionSyntaxError):
        parse_condition("proc.name = 'unterminated")


def test_list_items_keep_quoted_values() -> None:
    extra = """
- list: cmds
  items: ['"bash -c echo aGVsbG8= | base64 -d"', other]
"""
    assert fires("proc.cmdline in (cmds)", extra=extra)


def test_event_type_index_skips_other_types() -> None:
    engine = RuleEngine.from_text(("t.yaml", """
- rule: t
  desc: d
  condition: evt.type in (connect, openat) and proc.name exists
  output: o
  priority: INFO
"""))
    assert engine.rules[0].event_types == frozenset({"connect", "openat"})
    assert engine.rules_for("execve") == ()
    assert len(engine.rules_for("connect")) == 1


def test_b64_transformer_decodes() -> None:
    rec = {"event": "otelguard.process.exec", "attrs": {
        "otelguard.syscall.name": "execve", "process.executable.name": "x",
        "process.command_args": ["x", "aGVsbG8="]}}
    assert fires("b64(proc.args) = hello", rec)
    assert not fires("b64(proc.args) = world", rec)
    assert fires("len(proc.aname) = 3")  # len of a multi-valued field counts its values
