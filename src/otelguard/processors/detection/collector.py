"""Rule, macro and list documents -> one namespace of definitions, with Falco's semantics.

Files are collected in order into one namespace, as Falco does: later documents override or
append to items of earlier ones (``override: {condition: append}``, legacy ``append: true``,
``enabled:`` toggles, exceptions merged by name). Nothing is parsed or resolved here: macros
and lists may be used before they are defined, so the compile step
(:mod:`~otelguard.processors.detection.loader`) resolves them once every file is collected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from otelguard.processors.detection.reader import Item, key_line, yaml_bool
from otelguard.processors.detection.ruleset import RuleSet


@dataclass
class Definition:
    """A named item as collected so far (later documents may still change it)."""

    name: str
    file: str
    line: Optional[int]
    ruleset: str
    # Falco's visibility: index = when first defined, visibility = when last defined or
    # appended to (one counter over lists, macros and rules); see resolution.py
    index: int = 0
    visibility: int = 0


@dataclass
class ListDef(Definition):
    items: list[str] = field(default_factory=list)  # as written (quotes kept)


@dataclass
class MacroDef(Definition):
    condition: str = ""


@dataclass
class RuleDef(Definition):
    condition: str = ""
    output: str = ""
    desc: str = ""
    priority: str = ""
    tags: list[str] = field(default_factory=list)
    enabled: bool = True
    exceptions: list[dict[str, Any]] = field(default_factory=list)
    source: str = "syscall"
    order: int = 0
    skip_if_unknown_filter: bool = False
    warn_evttypes: bool = True


_OVERRIDABLE = {
    "rule": {"condition": {"append", "replace"}, "output": {"append", "replace"},
             "desc": {"append", "replace"}, "priority": {"replace"},
             "tags": {"append", "replace"}, "exceptions": {"append", "replace"},
             "enabled": {"replace"}, "source": {"replace"}, "capture": {"replace"},
             "capture_duration": {"replace"}, "warn_evttypes": {"replace"},
             "skip-if-unknown-filter": {"replace"}},
    "macro": {"condition": {"append", "replace"}},
    "list": {"items": {"append", "replace"}},
}


class Collector:
    """The definitions of one load, in the order rules were first defined."""

    def __init__(self, out: RuleSet, append_output: str = "") -> None:
        self.out = out
        self.append_output = append_output.strip()  # Falco's append_output / -p
        self.lists: dict[str, ListDef] = {}
        self.macros: dict[str, MacroDef] = {}
        self.rules: dict[str, RuleDef] = {}
        self._order = 0
        self._counter = 0  # Falco's m_cur_index: bumped by every define, append and override

    def _tick(self) -> int:
        n = self._counter
        self._counter += 1
        return n

    def add(self, item: Item) -> None:
        """Define, append to or override what ``item`` names."""
        collect = {"rule": self._rule, "macro": self._macro, "list": self._list}[item.kind]
        collect(item.body, item.name, item.file, item.line, item.ruleset, item.label)

    def _mode(self, item: dict[str, Any], kind: str, file: str, line: Optional[int],
              label: str) -> Optional[dict[str, str]]:
        """{key: append|replace} for an override/append item; {} for a plain definition."""
        modes: dict[str, str] = {}
        override = item.get("override")
        if override is not None:
            if not isinstance(override, dict):
                self.out.report_error(file, line, label,
                                      "override must map keys to append or replace")
                return None
            for key, mode in override.items():
                allowed = _OVERRIDABLE[kind].get(key)
                if allowed is None or mode not in allowed:
                    self.out.report_error(file, key_line(override, key, line), label,
                                          f"cannot override {key!r} with {mode!r} "
                                          f"(allowed: {_allowed_text(kind)})")
                    return None
                if key not in item:
                    self.out.report_error(file, line, label,
                                          f"override of {key!r} but no {key!r} given")
                    return None
                modes[key] = mode
        if yaml_bool(item.get("append")) is True:
            if override is not None:
                self.out.report_error(file, line, label, "use either append or override, not both")
                return None
            main = {"rule": "condition", "macro": "condition", "list": "items"}[kind]
            if kind == "rule":
                for key in ("condition", "exceptions", "output", "desc", "tags"):
                    if key in item:
                        modes[key] = "append"
            else:
                modes[main] = "append"
        return modes

    def _list(self, item: dict[str, Any], name: str, file: str, line: Optional[int],
              ruleset: str, label: str) -> None:
        modes = self._mode(item, "list", file, line, label)
        if modes is None:
            return
        raw = item.get("items")
        if raw is None:
            raw = []
        if not isinstance(raw, list):
            self.out.report_error(file, line, label, "items must be a list")
            return
        items = ["" if x is None else str(x) for x in raw]
        existing = self.lists.get(name)
        if modes:
            if existing is None:
                self.out.report_error(file, line, label,
                                      "append/override of a list that is not defined")
                return
            if modes.get("items") == "append":
                existing.items.extend(items)
            else:
                existing.items = items
            existing.visibility = self._tick()
            return
        if "items" not in item:
            self.out.report_error(file, line, label, "list needs items")
            return
        tick = self._tick()
        index = existing.index if existing is not None else tick
        self.lists[name] = ListDef(name, file, line, ruleset, index, tick, items)

    def _macro(self, item: dict[str, Any], name: str, file: str, line: Optional[int],
               ruleset: str, label: str) -> None:
        modes = self._mode(item, "macro", file, line, label)
        if modes is None:
            return
        cond = item.get("condition")
        if not isinstance(cond, str) or not cond.strip():
            self.out.report_error(file, line, label, "macro needs a condition")
            return
        existing = self.macros.get(name)
        if modes:
            if existing is None:
                self.out.report_error(file, line, label,
                                      "append/override of a macro that is not defined")
                return
            if modes.get("condition") == "append":
                existing.condition = f"{existing.condition} {cond}"
            else:
                existing.condition = cond
            existing.file, existing.line = file, line
            existing.visibility = self._tick()
            return
        tick = self._tick()
        index = existing.index if existing is not None else tick
        self.macros[name] = MacroDef(name, file, line, ruleset, index, tick, cond)

    def _rule(self, item: dict[str, Any], name: str, file: str, line: Optional[int],
              ruleset: str, label: str) -> None:
        modes = self._mode(item, "rule", file, line, label)
        if modes is None:
            return
        existing = self.rules.get(name)
        if not modes and set(item) <= {"rule", "enabled"}:
            if existing is None:  # legacy toggle: `- rule: X / enabled: false`
                self.out.report_error(file, line, label, "rule has 'enabled' key but no rule "
                                      "by that name already exists")
                return
            self._apply(existing, item, {"enabled": "replace"}, file, line, label)
            return
        if modes:
            if existing is None:
                self.out.report_error(file, line, label,
                                      "append/override of a rule that is not defined")
                return
            self._apply(existing, item, modes, file, line, label)
            self._tick()
            return
        missing = [k for k in ("condition", "output", "desc", "priority") if k not in item]
        if missing:
            self.out.report_error(file, line, label, "rule needs " + ", ".join(missing))
            return
        d = RuleDef(name, file, line, ruleset)
        self._tick()
        self._order += 1
        d.order = self._order
        self._apply(d, item, {k: "replace" for k in item if k not in ("rule", "append")},
                    file, line, label)
        if existing is not None:
            self.out.report_warning(file, line, label,
                                    f"redefines the rule from {existing.file}:{existing.line}")
            d.order = existing.order
        self.rules[name] = d

    def _apply(self, d: RuleDef, item: dict[str, Any], modes: dict[str, str], file: str,
               line: Optional[int], label: str) -> None:
        for key, mode in modes.items():
            value = item.get(key)
            if key == "override":
                continue
            if key in ("condition", "output", "desc", "priority", "source"):
                if not isinstance(value, str):
                    self.out.report_error(file, key_line(item, key, line), label,
                                          f"{key} must be a string")
                    continue
                if mode == "append":
                    setattr(d, key, f"{getattr(d, key)} {value}".strip())
                else:
                    setattr(d, key, value)
            elif key == "tags":
                if not isinstance(value, list):
                    self.out.report_error(file, key_line(item, key, line), label,
                                          "tags must be a list")
                    continue
                tags = [str(t) for t in value]
                d.tags = d.tags + tags if mode == "append" else tags
            elif key in ("enabled", "skip-if-unknown-filter", "warn_evttypes"):
                flag = yaml_bool(value)
                if flag is None:
                    self.out.report_error(file, key_line(item, key, line), label,
                                          f"{key} must be a bool")
                    continue
                if key == "enabled":
                    d.enabled = flag
                elif key == "warn_evttypes":
                    d.warn_evttypes = flag
                else:
                    d.skip_if_unknown_filter = flag
            elif key == "exceptions":
                if not isinstance(value, list):
                    self.out.report_error(file, key_line(item, key, line), label,
                                          "exceptions must be a list")
                    continue
                self._exceptions(d, value, mode, file, line, label)
            # capture, capture_duration: accepted, unused (the sensor takes no captures)

    def _exceptions(self, d: RuleDef, items: list[Any], mode: str, file: str,
                    line: Optional[int], label: str) -> None:
        if mode == "replace":
            d.exceptions = []
        by_name = {e["name"]: e for e in d.exceptions}
        for exc in items:
            if not isinstance(exc, dict) or not isinstance(exc.get("name"), str):
                self.out.report_error(file, getattr(exc, "line", line), label,
                                      "each exception needs a name")
                continue
            cur = by_name.get(exc["name"])
            if cur is not None:
                vals = exc.get("values") or []
                cur["values"] = list(cur.get("values") or []) + list(vals)
                continue
            if "fields" not in exc:
                self.out.report_error(file, getattr(exc, "line", line), label,
                                      f"exception {exc['name']!r} needs fields")
                continue
            entry = dict(exc)
            entry["_line"] = getattr(exc, "line", line)
            d.exceptions.append(entry)
            by_name[exc["name"]] = entry


def _allowed_text(kind: str) -> str:
    return ", ".join(f"{k}: {'|'.join(sorted(v))}" for k, v in _OVERRIDABLE[kind].items())
