"""Falco's semantics where they are easy to get wrong (issue 15, "Language"): each test states
what Falco (libs filter_compare / prefix_search / parser, Falco's rule loader and output
formatter) does, on rules loaded the normal way and real OTLP records."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from otelguard.processors.detection import cli
from otelguard.processors.detection.engine import RuleEngine
from otelguard.processors.detection.loader import load_rules_text
from otelguard.processors.detection.ruleset import RulesError

from .casefile import batch_of
from .records import EXEC, OPEN, fires

RULE = """
- rule: {name}
  desc: d
  condition: {cond}
  output: {output}
  priority: WARNING
  tags: [{tags}]
"""


def _rule(name: str = "t", cond: str = "proc.name = bash", output: str = "o",
          tags: str = "") -> str:
    return RULE.format(name=name, cond=cond, output=output, tags=tags)


def _outputs(text: str, record: dict[str, object] = EXEC, **kw: object) -> list[str]:
    engine = RuleEngine(load_rules_text([("t.yaml", text)], **kw))  # type: ignore[arg-type]
    return [d.record.body.string_value for d in engine.evaluate(batch_of(record))]


# -- operators ----------------------------------------------------------------------------------

@pytest.mark.parametrize("cond,expected", [
    ("proc.name > 1", True), ("proc.name < 1", False), ("proc.name >= 0x1", True),
    ("proc.name < val(proc.pname)", True), ("proc.name > val(proc.pname)", False),
    ("proc.name <= val(proc.name)", True), ("fd.num < 1", False),
])
def test_string_ordering_is_strcmp(cond: str, expected: bool) -> None:
    assert fires(cond) is expected


def test_glob_is_fnmatch3_not_python_fnmatch() -> None:
    assert not fires("proc.name glob '[^b]ash'")  # glibc: [^b] negates
    assert fires("proc.name glob '[^c]ash'")
    assert fires("proc.name iglob '[^C]ASH'")
    assert not fires("proc.name glob 'ba\\*'")  # \\* is a literal star
    assert fires("proc.exepath glob '/usr/*/bash'")


def test_pmatch_reads_glob_components_and_normalises_slashes() -> None:
    assert fires("fd.name pmatch (/e*)", OPEN)
    assert fires("fd.name pmatch (/etc/ld.so.*)", OPEN)
    assert not fires("fd.name pmatch (/etc/ld)", OPEN)
    assert fires("proc.exepath pmatch (/usr//bin)")
    opened = {**OPEN, "attrs": {**OPEN["attrs"], "file.path": "/var/run/secrets/token"}}
    assert fires("fd.name pmatch (/var/*/secrets)", opened)


# -- lists and macros -----------------------------------------------------------------------------

def test_list_name_standing_alone_is_substituted() -> None:
    assert fires("proc.name = l2", extra="- list: l2\n  items: [bash]\n")
    assert fires("proc.name in l2", extra="- list: l2\n  items: [bash]\n")
    assert fires("proc.name in (sh, l2)", extra="- list: l2\n  items: [zsh, bash]\n")
    assert not fires('proc.name = "l2"', extra="- list: l2\n  items: [bash]\n")


def test_lists_expand_one_level_with_visibility() -> None:
    lists = ("- list: x\n  items: [bash]\n- list: y\n  items: [x]\n"
             "- list: z\n  items: [y]\n")
    assert fires("proc.name in (y)", extra=lists)
    assert not fires("proc.name in (z)", extra=lists)  # z -> [x]: one level only, as Falco


def test_forward_macro_reference_is_an_error_with_the_place() -> None:
    text = ("- macro: a\n  condition: b\n- macro: b\n  condition: proc.name = bash\n"
            + _rule(cond="a"))
    rs = load_rules_text([("m.yaml", text)])
    assert not rs.ok
    assert any(e.file == "m.yaml" and e.line == 1 and "'b'" in e.message and "before" in
               e.message for e in rs.errors)
    # a rule may use a macro defined after it
    ok = _rule(cond="a") + "- macro: a\n  condition: proc.name = bash\n"
    assert load_rules_text([("m.yaml", ok)]).ok


# -- transformers ---------------------------------------------------------------------------------

@pytest.mark.parametrize("cond,expected", [
    ('join("-", (proc.name, user.name)) = bash-Alice', True),
    ('join(",", (proc.name, "x", 1)) = "bash,x,1"', True),
    ('tolower(join(":", (user.name, proc.name))) = alice:bash', True),
    ("user.name = toupper(user.name)", False), ("toupper(user.name) = toupper(user.name)", True),
    ("proc.name = tolower(proc.name)", True), ("proc.name in tolower(proc.name)", True),
    ("proc.cmdline icontains val(proc.name)", True), ("proc.exepath glob val(proc.exepath)", True),
    ("proc.exepath endswith val(proc.name)", True), ("proc.exepath startswith val(proc.name)", False),
    ("proc.apid > 4199", True), ("proc.apid < 4199", False), ("proc.apid >= 4200", True),
])
def test_transformers_and_val(cond: str, expected: bool) -> None:
    assert fires(cond) is expected


# -- exceptions written as in Falco's documentation ---------------------------------------------

EXCEPTIONS = """
- rule: Write below binary dir
  desc: an attempt to write to any file below a set of binary directories
  condition: evt.type = openat and fd.name startswith /etc
  output: "File below a known binary directory opened for writing (file=%fd.name)"
  priority: ERROR
  exceptions:
    - name: proc_writer
      fields: [proc.name, fd.directory]
      comps: [=, =]
      values:
        - [my-custom-yum, /usr/bin]
        - [cp, /usr/local/bin]
    - name: proc_filenames
      fields: [proc.name, fd.name]
      comps: [=, in]
      values:
        - [apk, [/etc/ld.so.preload]]
    - name: filenames
      fields: fd.filename
      comps: in
      values: [ld.so.conf]
"""


def test_exceptions_as_documented_load_and_apply() -> None:
    rs = load_rules_text([("e.yaml", EXCEPTIONS)])
    assert rs.ok, rs.errors
    engine = RuleEngine(rs)
    assert len(engine.evaluate(batch_of(OPEN))) == 1
    apk = {**OPEN, "attrs": {**OPEN["attrs"], "process.executable.name": "apk"}}
    assert engine.evaluate(batch_of(apk)) == []
    preload = EXCEPTIONS.replace("values: [ld.so.conf]", "values: [ld.so.preload]")
    assert RuleEngine.from_text(("e.yaml", preload)).evaluate(batch_of(OPEN)) == []


def test_exception_shapes_from_falcos_exceptions_announcement() -> None:
    # comps [=, contains]; an appended exception whose `in` value names a list or is a list
    text = EXCEPTIONS + """
- list: cp_files
  items: [/etc/ld.so.preload, /etc/passwd]
- rule: Write below binary dir
  exceptions:
    - name: known_bin_writers
      fields: [proc.name, fd.name]
      comps: [=, contains]
      values:
        - [nginx, /usr/bin/nginx]
    - name: proc_filenames
      values:
        - [cp, cp_files]
        - [rpm, [/bin/cp, /bin/pwd]]
  append: true
"""
    rs = load_rules_text([("e.yaml", text)])
    assert rs.ok, rs.errors
    assert RuleEngine(rs).evaluate(batch_of(OPEN)) == []  # [cp, cp_files] excepts it
    no_list = text.replace("[cp, cp_files]", "[cp, [/etc/passwd]]")
    assert len(RuleEngine.from_text(("e.yaml", no_list)).evaluate(batch_of(OPEN))) == 1


# -- overrides, engine version, selection -------------------------------------------------------

def test_override_warn_evttypes_and_skip_if_unknown_filter() -> None:
    text = _rule() + ("- rule: t\n  warn_evttypes: false\n  skip-if-unknown-filter: true\n"
                      "  override:\n    warn_evttypes: replace\n"
                      "    skip-if-unknown-filter: replace\n")
    rs = load_rules_text([("o.yaml", text)])
    assert rs.ok, rs.errors
    assert [s.state for s in rs.statuses] == ["loaded"]


def test_newer_required_engine_version_refuses_the_file() -> None:
    rs = load_rules_text([("v.yaml", "- required_engine_version: 0.99.0\n" + _rule())])
    assert not rs.ok and rs.errors[0].line == 1 and "0.99.0" in rs.errors[0].message
    assert load_rules_text([("v.yaml", "- required_engine_version: 0.26.0\n" + _rule())]).ok


def test_enable_and_disable_by_wildcard_and_tag() -> None:
    text = (_rule("Read a", tags="network") + _rule("Read b", tags="shell") + _rule("Write c")
            + _rule("Off d", tags="shell").replace("  tags:", "  enabled: false\n  tags:"))
    rs = load_rules_text([("s.yaml", text)])

    def names(**kw: tuple[str, ...]) -> list[str]:
        from otelguard.processors.detection.ruleset import RuleSelection
        return [r.name for r in RuleEngine(rs, selection=RuleSelection(**kw)).rules]

    assert names() == ["Read a", "Read b", "Write c"]
    assert names(disabled_rules=("Read *",)) == ["Write c"]
    assert names(disabled_tags=("shell",)) == ["Read a", "Write c"]
    assert names(disabled_rules=("*",), enabled_tags=("shell",)) == ["Read b", "Off d"]
    assert names(enabled_rules=("Off d",)) == ["Read a", "Read b", "Write c", "Off d"]
    with pytest.raises(RulesError, match="Raed"):
        RuleEngine(rs, disabled_rules=("Raed a",))


# -- output ---------------------------------------------------------------------------------------

def test_output_width_transformers_aname_and_append_output() -> None:
    text = _rule(output='"[%6proc.name] [%2proc.name] %toupper(user.name) %proc.aname '
                        '%proc.apid %(proc.name)."')
    assert _outputs(text) == ["[bash  ] [ba] ALICE bash 4242 bash."]
    assert _outputs(_rule(output="o"), append_output="user=%user.name") == ["o user=Alice"]


def test_unknown_output_field_is_a_load_error() -> None:
    rs = load_rules_text([("o.yaml", _rule(output="'%proc.nmae'"))])
    assert not rs.ok and rs.errors[0].line == 2 and "proc.nmae" in rs.errors[0].message
    rs = load_rules_text([("o.yaml", _rule(output="'%proc.nmae'").replace(
        "  tags:", "  skip-if-unknown-filter: true\n  tags:"))])
    assert rs.ok and [s.state for s in rs.statuses] == ["skipped"]


# -- unknown fields -------------------------------------------------------------------------------

def test_unknown_field_is_a_load_error_with_file_and_line() -> None:
    text = _rule("ok") + _rule("typo", cond="not proc.nmae = bash")
    rs = load_rules_text([("u.yaml", text)])
    assert not rs.ok
    assert [(e.file, e.line) for e in rs.errors] == [("u.yaml", 9)]
    assert "proc.nmae" in rs.errors[0].message
    with pytest.raises(RulesError, match="u.yaml:9"):
        RuleEngine(rs)


def test_skip_if_unknown_filter_skips_with_a_warning() -> None:
    text = _rule("typo", cond="proc.nmae = bash").replace(
        "  tags:", "  skip-if-unknown-filter: true\n  tags:")
    rs = load_rules_text([("u.yaml", text)])
    assert rs.ok and [s.state for s in rs.statuses] == ["skipped"]
    assert any("proc.nmae" in w.message for w in rs.warnings)


def test_validate_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def run(text: str) -> int:
        f = tmp_path / "r.yaml"
        f.write_text(text)
        return cli.validate_main(argparse.Namespace(files=[str(f)], append_output=""))

    assert run(_rule()) == 0
    assert run(_rule(cond="proc.nmae = x")) == 1
    assert run(_rule(cond="thread.cap_inheritable contains X")) == 3
    assert "cannot run on this sensor: field thread.cap_inheritable" in capsys.readouterr().out


# -- evt.dir / procexit ---------------------------------------------------------------------------

EXIT = {"event": "otelguard.process.exit",
        "attrs": {"otelguard.syscall.name": "exit_group", "process.pid": 7,
                  "process.executable.name": "bash"}}


def test_process_exit_is_procexit_enter_event() -> None:
    assert fires("evt.type = procexit and evt.dir = >", EXIT)
    assert not fires("evt.type = exit_group", EXIT)
    assert fires("evt.type = execve and evt.dir = <")


def test_rules_yaml_scalars_are_read_as_yaml_cpp_does() -> None:
    # YAML 1.1 would read 0644 as octal 420, 10:30 as 630 and no as false
    cwd = {**EXEC, "attrs": {**EXEC["attrs"], "process.working_directory": "/srv/10:30"}}
    extra = "- list: odd\n  items: [0644, 10:30, no]\n"
    assert fires("proc.name in (odd) or proc.cwd endswith 10:30/", cwd, extra=extra)
    named = {**EXEC, "attrs": {**EXEC["attrs"], "process.executable.name": "0644"}}
    assert fires("proc.name in (odd)", named, extra=extra)
    off = _rule().replace("  tags:", "  enabled: no\n  tags:")
    assert [s.state for s in load_rules_text([("b.yaml", off)]).statuses] == ["disabled"]
