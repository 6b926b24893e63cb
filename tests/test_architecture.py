"""Architecture rules that code review alone would miss (docs/architecture.md#layers, #attribute-schema)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "otelguard"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _modules(package: str) -> list[Path]:
    return sorted((SRC / package).rglob("*.py"))


def test_packages_exist() -> None:
    for package in ("ebpf", "exporter", "processors"):
        assert _modules(package), package


def test_processors_import_neither_ebpf_nor_exporter() -> None:
    offenders = {
        str(p.relative_to(SRC)): sorted(
            m for m in _imports(p) if m.startswith(("otelguard.ebpf", "otelguard.exporter"))
        )
        for p in _modules("processors")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_ebpf_imports_neither_exporter_nor_processors() -> None:
    offenders = {
        str(p.relative_to(SRC)): sorted(
            m for m in _imports(p) if m.startswith(("otelguard.exporter", "otelguard.processors"))
        )
        for p in _modules("ebpf")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_only_the_loader_imports_bcc() -> None:
    importers = sorted(
        str(p.relative_to(SRC))
        for p in SRC.rglob("*.py")
        if any(m == "bcc" or m.startswith("bcc.") for m in _imports(p))
    )
    assert importers == ["ebpf/loader.py"]


def test_attribute_keys_are_declared_once() -> None:
    """No semantic-convention key spelled as a string literal outside semconv.py."""
    from otelguard import semconv

    keys = {
        v for k, v in vars(semconv).items()
        if k.isupper() and isinstance(v, str) and "." in v and not v.startswith("http")
    }
    found: dict[str, list[str]] = {}
    for path in SRC.rglob("*.py"):
        if path.name == "semconv.py":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in keys:
                found.setdefault(node.value, []).append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert found == {}


def test_no_grab_bag_modules() -> None:
    bad = [p for p in SRC.rglob("*.py") if re.fullmatch(r"(utils|helpers|manager|misc)\.py", p.name)]
    assert bad == []
