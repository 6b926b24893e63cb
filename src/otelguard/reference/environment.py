"""Every environment variable: the ones otelguard's Python code reads, and the ones the
Collector and Jaeger configs expand.

* Python: each package's settings module declares ``ENVIRONMENT``
  (:class:`otelguard.config.EnvVar`); every ``settings.py`` under the package is imported and
  its declarations are merged by name (``OTELGUARD_NODE_NAME`` is read by two packages).
  ``tests/config/test_reference.py`` scans the source for reads and fails on one no settings
  module declares.
* Collector configs: every ``${env:NAME:-default}`` in ``otel-config/`` and ``deploy/`` YAML. The
  description is the file's own comment table, a comment line ``#   NAME   what it does``
  (continued on more-indented comment lines); ``NAME/_SUFFIX`` and ``NAME / _SUFFIX`` describe
  two variables whose names differ in their last segments (``..._TLS_CERT/_KEY``).
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from otelguard.config import EnvVar

PACKAGE = Path(__file__).resolve().parents[1]
# Collector, Jaeger and Kubernetes configs whose ${env:...} uses are listed; in this order, so
# the local config's comment describes a variable before a rendered copy's does.
CONFIG_DIRS = ("otel-config", "deploy")

_EXPANSION = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_COMMENT = re.compile(r"^(\s*#\s*)(\S.*)$")
_TABLE_ROW = re.compile(
    r"^(\s*#\s{2,})([A-Z][A-Z0-9]*_[A-Z0-9_]+(?:\s?/\s?_[A-Z0-9_]+)*)\s+(\S.*)$")


@dataclass
class PythonVar:
    """A variable otelguard reads, merged over the packages that declare it."""

    name: str
    unset: list[str] = field(default_factory=list)
    description: list[str] = field(default_factory=list)
    packages: list[str] = field(default_factory=list)


@dataclass
class ConfigVar:
    """A variable a Collector/Jaeger config expands: defaults and files as found."""

    name: str
    defaults: dict[str, list[str]] = field(default_factory=dict)  # default -> files
    description: str = ""


def settings_modules() -> list[str]:
    """``otelguard.<...>.settings`` for every settings.py in the package, sorted."""
    names = []
    for path in sorted(PACKAGE.rglob("settings.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names.append(".".join(parts))
    return names


def python_variables() -> list[PythonVar]:
    """Every declared variable, sorted by name; a variable read by two packages is one entry."""
    merged: dict[str, PythonVar] = {}
    for module_name in settings_modules():
        module = importlib.import_module(module_name)
        declared: tuple[EnvVar, ...] = getattr(module, "ENVIRONMENT", ())
        package = module_name.removeprefix("otelguard.").removesuffix(".settings")
        for var in declared:
            entry = merged.setdefault(var.name, PythonVar(var.name))
            for target, text in ((entry.unset, var.unset), (entry.description, var.description)):
                if text not in target:
                    target.append(text)
            entry.packages.append(package)
    return [merged[name] for name in sorted(merged)]


def config_files(root: Path) -> list[Path]:
    """The YAML files searched for ``${env:...}``, in :data:`CONFIG_DIRS` order."""
    out: list[Path] = []
    for directory in CONFIG_DIRS:
        found = [p for p in (root / directory).rglob("*") if p.suffix in (".yaml", ".yml")]
        out.extend(sorted(found))
    return out


def config_variables(root: Path) -> list[ConfigVar]:
    """Every ``${env:...}`` in the config files under ``root``, sorted by name."""
    found: dict[str, ConfigVar] = {}
    descriptions: dict[str, str] = {}
    for path in config_files(root):
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(root).as_posix()
        for name, default in _EXPANSION.findall(text):
            files = found.setdefault(name, ConfigVar(name)).defaults.setdefault(default, [])
            if rel not in files:
                files.append(rel)
        for name, description in comment_table(text).items():
            descriptions.setdefault(name, description)
    for var in found.values():
        var.description = descriptions.get(var.name, "")
    return [found[name] for name in sorted(found)]


def comment_table(text: str) -> dict[str, str]:
    """``#   NAME   description`` rows of a YAML file's comments, continuation lines joined."""
    out: dict[str, str] = {}
    names: list[str] = []
    depth = 0
    for line in text.splitlines():
        row = _TABLE_ROW.match(line)
        if row:
            names = expand_names(row.group(2))
            depth = len(row.group(1))
            for name in names:
                out[name] = _one_line(row.group(3))
            continue
        more = _COMMENT.match(line)
        if names and more and len(more.group(1)) > depth:
            for name in names:
                out[name] += " " + _one_line(more.group(2))
            continue
        names = []
    return out


def _one_line(text: str) -> str:
    """Column padding inside a comment table collapsed to single spaces."""
    return " ".join(text.split())


def expand_names(spec: str) -> list[str]:
    """``A_B_C/_D`` -> ``A_B_C``, ``A_B_D``: a suffix of k segments replaces the last k."""
    parts = [p.strip() for p in spec.split("/")]
    first = parts[0]
    names = [first]
    segments = first.split("_")
    for suffix in parts[1:]:
        k = len(suffix.strip("_").split("_"))
        names.append("_".join(segments[:-k]) + suffix)
    return names
