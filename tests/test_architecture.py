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


# The layer order (docs/architecture.md#layers): each unit may import itself and the units
# named for it, nothing else of otelguard. Bottom first.
BOTTOM = {"otlp", "semconv", "telemetry", "config"}
ALLOWED: dict[str, set[str]] = {
    "semconv": set(),
    "config": set(),
    "otlp": {"semconv"},
    "telemetry": {"semconv"},
    "ebpf": BOTTOM,
    "transport": BOTTOM,
    "exporter": BOTTOM | {"ebpf", "transport"},
    "kube": BOTTOM,
    "response": BOTTOM | {"kube"},
    "risk": BOTTOM | {"kube"},
    "processors": BOTTOM | {"transport", "kube", "response", "risk"},
}
TOP = {"agent", "runner", "status", "cli", "schemas", "reference", "__init__"}  # may import any unit


def _unit(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imported_units(path: Path) -> set[str]:
    """otelguard units a module imports (``from otelguard import x`` names unit x)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    units: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = ([f"{node.module}.{a.name}" for a in node.names]
                     if node.module == "otelguard" else [node.module])
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "otelguard" and len(parts) > 1:
                units.add(parts[1])
    return units


def test_every_unit_has_a_place_in_the_layer_order() -> None:
    units = {_unit(p) for p in SRC.rglob("*.py")}
    assert units - set(ALLOWED) - TOP == set()
    for package in ("otlp", "config", "ebpf", "transport", "exporter", "processors"):
        assert _modules(package), package


def test_imports_follow_the_layer_order() -> None:
    """Nothing imports upward or sideways: e.g. processors never import ebpf or exporter,
    transport never imports processors (the former cycle through processors.otlp)."""
    offenders: dict[str, list[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        unit = _unit(path)
        if unit in TOP:
            continue
        bad = sorted(_imported_units(path) - ALLOWED[unit] - {unit})
        if bad:
            offenders[str(path.relative_to(SRC))] = bad
    assert offenders == {}


def test_the_layer_order_has_no_cycle() -> None:
    """The allowed edges themselves form a DAG (a typo in ALLOWED cannot allow a cycle)."""
    done: set[str] = set()

    def visit(unit: str, stack: tuple[str, ...]) -> None:
        assert unit not in stack, " -> ".join(stack + (unit,))
        if unit in done:
            return
        for dep in ALLOWED[unit]:
            visit(dep, stack + (unit,))
        done.add(unit)

    for unit in ALLOWED:
        visit(unit, ())


def test_the_layer_check_sees_a_violation(tmp_path: Path) -> None:
    """The checker itself: a module that imports upward is reported."""
    mod = tmp_path / "m.py"
    mod.write_text("from otelguard.processors.otlp import x\nfrom otelguard import ebpf\n")
    assert _imported_units(mod) == {"processors", "ebpf"}


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


def test_no_module_past_the_split_size() -> None:
    """A module past ~500 lines is split along its domain's seams (BPF C is exempt)."""
    big = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py")
           if (n := len(p.read_text().splitlines())) > 500}
    assert big == {}


def test_no_test_module_imports_another() -> None:
    """Shared test pieces live in tests/support/ or a package's non-test modules, so running
    one test file never runs (or depends on) another's module."""
    tests_dir = SRC.parents[1] / "tests"
    offenders = []
    for path in tests_dir.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                mod = ("." * node.level) + (node.module or "")
                names = [mod.rsplit(".", 1)[-1]] + [a.name for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name.rsplit(".", 1)[-1] for a in node.names]
            else:
                continue
            if any(n.startswith("test_") or n == "conftest" for n in names):
                offenders.append(f"{path.relative_to(tests_dir)}:{node.lineno}")
    assert offenders == []


def test_every_type_ignore_names_its_code_and_says_why() -> None:
    bare = [f"{p.relative_to(SRC)}:{n}" for p in SRC.rglob("*.py")
            for n, line in enumerate(p.read_text().splitlines(), 1)
            if "type: ignore" in line and not re.search(r"type: ignore\[[a-z,-]+\]  # \S", line)]
    assert bare == []
