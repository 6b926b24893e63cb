"""Rules files -> their rule, macro and list documents, each with file and line (Falco's reader).

The reader knows the file format only: a YAML list whose items are ``rule``/``macro``/``list``
documents or the ``required_engine_version`` / ``required_plugin_versions`` headers. It records
the headers, warns about keys a document kind does not have, and yields every well-formed
document as an :class:`Item` for the collector, lazily, so the diagnostics of reading and
collecting stay in file order. What an item means (append, override, exceptions) is the
collector's business.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

from otelguard.config import LocatedDict, LocatedList, load_yaml
from otelguard.processors.detection.ruleset import ENGINE_VERSION, RuleSet
from otelguard.processors.errors import ConfigError

RULE_SUFFIXES = (".yaml", ".yml")
RULE_KEYS = {"rule", "condition", "output", "desc", "priority", "tags", "enabled", "exceptions",
             "source", "append", "override", "warn_evttypes", "skip-if-unknown-filter",
             "capture", "capture_duration"}
MACRO_KEYS = {"macro", "condition", "append", "override"}
LIST_KEYS = {"list", "items", "append", "override"}


@dataclass(frozen=True)
class Item:
    """One rule, macro or list document as written, and where it was written."""

    kind: str  # "rule" | "macro" | "list"
    name: str
    body: dict[str, Any]  # the YAML mapping; a LocatedDict knows the line of each key
    file: str
    line: Optional[int]
    ruleset: str  # the file's stem

    @property
    def label(self) -> str:
        """How diagnostics name the item: ``rule 'X'``."""
        return f"{self.kind} {self.name!r}"


class RulesReader:
    """Reads rules files for one load, reporting problems into ``out``."""

    def __init__(self, out: RuleSet) -> None:
        self.out = out

    def read_file(self, path: Union[str, Path]) -> Iterator[Item]:
        p = Path(path)
        file = str(path)
        try:
            data = p.read_bytes()
            text = data.decode()
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else None
            self.out.report_error(file, None, "", f"cannot read rules file: {why or exc}")
            return
        self.out.sources.append((file, hashlib.sha256(data).hexdigest()))
        yield from self.read_text(text, file, p.stem)

    def read_text(self, text: str, file: str, ruleset: str) -> Iterator[Item]:
        try:
            doc = load_yaml(text, file, text_scalars=True)
        except ConfigError as exc:
            for issue in exc.issues:
                self.out.report_error(file, issue.line, "", issue.message)
            return
        if doc is None:
            return
        if not isinstance(doc, list):
            self.out.report_error(file, getattr(doc, "line", None), "",
                                  "a rules file is a YAML list of rule/macro/list items")
            return
        lines = doc.item_lines if isinstance(doc, LocatedList) else []
        for i, item in enumerate(doc):
            line = lines[i] if i < len(lines) else None
            if not isinstance(item, dict):
                self.out.report_error(file, line, "", f"item {i} is not a mapping")
                continue
            read = self._item(item, file, line, ruleset)
            if read is not None:
                yield read

    def _item(self, item: dict[str, Any], file: str, line: Optional[int], ruleset: str
              ) -> Optional[Item]:
        if "required_engine_version" in item:
            ver = str(item["required_engine_version"])
            self.out.required_engine_versions.append((file, ver))
            need = _version_tuple(ver)
            if need[:1] != ENGINE_VERSION[:1] or need > ENGINE_VERSION:
                # Falco refuses the file: its rules may use what this engine does not know
                self.out.report_error(
                    file, key_line(item, "required_engine_version", line), "",
                    f"rules require engine version {ver}, but the engine version is "
                    f"{'.'.join(map(str, ENGINE_VERSION))}")
            return None
        if "required_plugin_versions" in item:
            plugins = item["required_plugin_versions"]
            for p in plugins if isinstance(plugins, list) else []:
                if isinstance(p, dict):
                    self.out.required_plugins.append(
                        (file, str(p.get("name", "")), str(p.get("version", ""))))
            return None
        for kind, keys in (("rule", RULE_KEYS), ("macro", MACRO_KEYS), ("list", LIST_KEYS)):
            if kind in item:
                name = item[kind]
                label = f"{kind} {name!r}"
                if not isinstance(name, str) or not name.strip():
                    self.out.report_error(file, line, label, f"{kind} needs a non-empty name")
                    return None
                for key in item:
                    if key not in keys:
                        self.out.report_warning(file, key_line(item, key, line), label,
                                                f"unknown key {key!r} ignored")
                return Item(kind, name, item, file, line, ruleset)
        self.out.report_error(file, line, "", "unknown item: expected rule, macro, list, "
                              "required_engine_version or required_plugin_versions, got keys "
                              + ", ".join(sorted(map(str, item))))
        return None


def expand_rule_paths(paths: Sequence[Union[str, Path]]) -> list[Path]:
    """Files to read, in order: a directory stands for its ``*.yaml``/``*.yml`` files in name
    order (Falco's ``rules_files`` does the same). Hidden entries are skipped, which is what a
    Kubernetes ConfigMap volume needs: its ``..data`` and ``..<timestamp>`` entries are the
    kubelet's, the visible names are symlinks through ``..data``. A path that does not exist
    stays in the list, so reading it reports the error."""
    out: list[Path] = []
    for path in paths:
        p = Path(path)
        if p.is_dir():
            out.extend(sorted(f for f in p.iterdir() if not f.name.startswith(".")
                              and f.suffix in RULE_SUFFIXES and f.is_file()))
        else:
            out.append(p)
    return out


_TRUE = frozenset({"y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"})
_FALSE = frozenset({"n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"})


def yaml_bool(value: Any) -> Optional[bool]:
    """A boolean key's value as yaml-cpp converts it (rules files are read with plain scalars
    as text, :func:`~otelguard.config.load_yaml`); None when it is not a boolean."""
    if isinstance(value, bool):
        return value
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    return None


def key_line(container: Any, key: str, default: Optional[int]) -> Optional[int]:
    """The line of ``key`` in a YAML mapping read with positions, else ``default``."""
    if isinstance(container, LocatedDict):
        return container.key_lines.get(key, default)
    return default


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for p in text.strip().split("."):
        try:
            parts.append(int(p))
        except ValueError:
            parts.append(0)
    if len(parts) == 1:  # old integer engine versions (e.g. 26) predate 0.x.y numbering
        return (0, parts[0], 0)
    return tuple(parts)
