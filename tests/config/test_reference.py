"""docs/configuration.md: current, complete, and every environment read in src/ declared."""

from __future__ import annotations

import ast
import re
import textwrap
from pathlib import Path

import pytest

from otelguard.cli import build_parser, main
from otelguard.reference import render
from otelguard.reference.commands import commands
from otelguard.reference.environment import (
    comment_table, config_variables, expand_names, python_variables,
)
from otelguard.reference.keys import section_groups
from otelguard.schemas import documents

ROOT = Path(__file__).resolve().parents[2]
PUBLISHED = ROOT / "docs" / "configuration.md"
SRC = ROOT / "src" / "otelguard"
# A literal with this shape names an otelguard variable wherever it is passed (settings modules
# read through a Mapping parameter, ``env.get("OTELGUARD_HOST_ID")``, not os.environ itself).
# The OTel SDK's own OTEL_* names (exporter/settings.py) are read the same way.
OUR_NAME = re.compile(r"^(OTELGUARD|OTEL)_[A-Z0-9_]+$")


def test_the_published_reference_is_current() -> None:
    """Regenerate with ``otelguard config reference --write docs/configuration.md``."""
    assert PUBLISHED.read_text(encoding="utf-8") == render(ROOT), (
        "docs/configuration.md is stale: run "
        "`otelguard config reference --write docs/configuration.md` and review the diff")


def environment_reads(source: str) -> set[str]:
    """Names read through ``os.environ.get/[...]``, ``os.getenv`` (constants resolved through
    module-level assignments), and every ``OTELGUARD_*``/``OTEL_*`` string literal."""
    tree = ast.parse(source)
    constants = {t.id: node.value.value for node in tree.body if isinstance(node, ast.Assign)
                 and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
                 for t in node.targets if isinstance(t, ast.Name)}

    def name_of(arg: ast.expr) -> str | None:
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            return arg.value
        if isinstance(arg, ast.Name):
            return constants.get(arg.id, f"<unresolved {arg.id}>")
        return f"<dynamic {ast.unparse(arg)}>"

    # ``environ`` alone is the process environment only after ``from os import environ`` (a
    # WSGI handler's ``environ`` parameter is a request)
    from_os = {a.asname or a.name for node in ast.walk(tree)
               if isinstance(node, ast.ImportFrom) and node.module == "os" for a in node.names}

    def is_environ(node: ast.expr) -> bool:
        text = ast.unparse(node)
        return text == "os.environ" or (text == "environ" and "environ" in from_os)

    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and OUR_NAME.match(
                node.value):
            found.add(node.value)
        elif isinstance(node, ast.Subscript) and is_environ(node.value):
            found.add(name_of(node.slice) or "")
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            text = ast.unparse(func)
            if text == "os.getenv" or (text == "getenv" and "getenv" in from_os) or (
                    isinstance(func, ast.Attribute) and func.attr in ("get", "pop", "setdefault")
                    and is_environ(func.value)):
                found.add(name_of(node.args[0]) or "")
    return found


def _reads_in_src() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        if path.parent.name == "reference":
            continue  # the generator names no variable of its own
        for name in environment_reads(path.read_text(encoding="utf-8")):
            out.setdefault(name, []).append(str(path.relative_to(ROOT)))
    return out


def test_every_environment_variable_the_code_reads_is_in_the_reference() -> None:
    reads = _reads_in_src()
    declared = {v.name for v in python_variables()}
    undeclared = {name: files for name, files in reads.items() if name not in declared}
    assert undeclared == {}, (
        "declare these in the ENVIRONMENT of the package's settings.py (otelguard.config.EnvVar)")
    published = PUBLISHED.read_text(encoding="utf-8")
    assert [name for name in reads if f"`{name}`" not in published] == []
    assert sorted(declared - set(reads)) == [], "declared but never read: drop the declaration"


def test_the_scan_sees_every_form_of_read() -> None:
    source = textwrap.dedent("""
        import os
        NAME_ENV = "OTELGUARD_FROM_CONSTANT"
        a = os.environ.get(NAME_ENV)
        b = os.environ["HOME"]
        c = os.getenv("LANG", "C")
        d = os.environ.get(prefix + "X")
        def read(env):
            return env.get("OTELGUARD_THROUGH_A_MAPPING")
        e = os.environ.setdefault("TZ", "UTC")
        f = "OTELGUARD not a name"
        def app(environ, start_response):
            return environ.get("PATH_INFO")
    """)
    assert environment_reads(source) == {
        "OTELGUARD_FROM_CONSTANT", "HOME", "LANG", "<dynamic prefix + 'X'>",
        "OTELGUARD_THROUGH_A_MAPPING", "TZ"}
    assert environment_reads("from os import environ, getenv\n"
                             "x = environ['USER'] + getenv('SHELL')\n") == {"USER", "SHELL"}


def test_every_flag_variable_and_key_has_a_description() -> None:
    missing = [f"{cmd.path}: command" for cmd in commands(build_parser()) if not cmd.help]
    missing += [f"{cmd.path} {flag.usage}" for cmd in commands(build_parser())
                for flag in cmd.flags if not flag.help]
    missing += [f"env {v.name}" for v in python_variables() if not all(v.description)]
    missing += [f"env {v.name} (add a `#   NAME  description` comment row to its config)"
                for v in config_variables(ROOT) if not v.description]
    for kind, (cls, title) in documents().items():
        from otelguard.config import document_schema

        for name, prop in document_schema(cls, title)["properties"].items():
            missing += [f"{kind}: {key.path}" for group in section_groups(name, prop)
                        for key in group.keys if not key.description]
    assert missing == [], "add help= / EnvVar / a field comment at the source"


def test_the_reference_lists_what_it_walks() -> None:
    text = render(ROOT)
    for needle in ("### `otelguard agent`", "`--otlp-endpoint HOST:PORT` |  | the next hop",
                   "`--spool-max-bytes BYTES` | `268435456`", "`OTELGUARD_TRACEFS`",
                   "`OTELGUARD_LOKI_OTLP_URL`", "`sensor.probe.ringbuf_pages` | integer | `2048`",
                   "#### `processors[] with type: noise_control`",
                   "`processors[].config.burst` | integer | `3`",
                   "`service.tls.client_ca_file` | string or null | `null`"):
        assert needle in text, needle
    # OTELGUARD_NODE_NAME is read by two packages: one row naming both
    row = next(line for line in text.splitlines() if line.startswith("| `OTELGUARD_NODE_NAME`"))
    assert "| ebpf, exporter |" in row


def test_collector_comment_tables() -> None:
    assert expand_names("OTELGUARD_COLLECTOR_TLS_CERT/_KEY") == [
        "OTELGUARD_COLLECTOR_TLS_CERT", "OTELGUARD_COLLECTOR_TLS_KEY"]
    assert expand_names("OTELGUARD_COLLECTOR_MEMORY_LIMIT_MIB / _SPIKE_MIB") == [
        "OTELGUARD_COLLECTOR_MEMORY_LIMIT_MIB", "OTELGUARD_COLLECTOR_MEMORY_SPIKE_MIB"]
    text = textwrap.dedent("""\
        # Header prose mentioning OTELGUARD_NOT_A_ROW in a sentence.
        #   OTELGUARD_A_B    first   line
        #                    and its continuation
        #   OTELGUARD_C_D/_E  two at once
        # prose again
        #                    not a continuation of anything
        key: ${env:OTELGUARD_A_B:-x}
        """)
    assert comment_table(text) == {"OTELGUARD_A_B": "first line and its continuation",
                                   "OTELGUARD_C_D": "two at once", "OTELGUARD_C_E": "two at once"}


def test_the_command_writes_the_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "configuration.md"
    assert main(["config", "reference", "--repo", str(ROOT), "--write", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == PUBLISHED.read_text(encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert main(["config", "reference"]) == 2
    assert "run it from the repository root or give --repo DIR" in capsys.readouterr().err
