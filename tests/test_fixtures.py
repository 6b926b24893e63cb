"""The session fixtures are defined once: tests/conftest.py loads their modules as plugins, and no
other module imports a fixture from them. An import would define a second fixture of the same
name in the importing module, and pytest would start a second etcd + kube-apiserver (or Sensor,
or node) for the tests under it: several ran at once before, with their threads and descriptors."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).parent


def plugin_modules() -> list[str]:
    """tests/conftest.py's ``pytest_plugins`` (read, not imported: test modules import none of
    each other, test_architecture.py)."""
    for node in ast.parse((TESTS / "conftest.py").read_text()).body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "pytest_plugins" for t in node.targets):
            return [ast.literal_eval(e) for e in node.value.elts]  # type: ignore[attr-defined]
    return []


def fixtures_of(module: str) -> set[str]:
    path = TESTS.parent / (module.replace(".", "/") + ".py")
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef):
            for dec in node.decorator_list:
                target = dec.func if isinstance(dec, ast.Call) else dec
                if isinstance(target, ast.Attribute) and target.attr == "fixture":
                    names.add(node.name)
    return names


def fixture_imports(source: str, plugins: dict[str, set[str]]) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module in plugins:
            found += [f"{node.module}.{a.name} (line {node.lineno})" for a in node.names
                      if a.name in plugins[node.module] or a.name == "*"]
    return found


def test_the_plugins_define_the_session_fixtures() -> None:
    plugins = {m: fixtures_of(m) for m in plugin_modules()}
    assert {"kube", "admin"} <= plugins["tests.support.kube_world"]
    assert "sensor" in plugins["tests.support.sensor"]
    assert "node" in plugins["tests.support.node"]


def test_no_module_imports_a_session_fixture() -> None:
    plugins = {m: fixtures_of(m) for m in plugin_modules()}
    offenders = {}
    for path in sorted(TESTS.rglob("*.py")):
        found = fixture_imports(path.read_text(), plugins)
        if found:
            offenders[str(path.relative_to(TESTS))] = found
    assert offenders == {}


def test_the_guard_sees_an_import() -> None:
    plugins = {"tests.support.kube_world": {"kube", "admin"}}
    source = "from tests.support.kube_world import (\n    admin, make_namespace,\n)\n"
    assert fixture_imports(source, plugins) == ["tests.support.kube_world.admin (line 1)"]
    assert fixture_imports("from tests.support.kube_world import make_namespace\n",
                           plugins) == []
