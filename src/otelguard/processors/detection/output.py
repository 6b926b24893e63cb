"""Falco output templates: ``%field``, ``%field[N]``, ``%evt.arg.flags``, ``%(field)``, ``%%``,
``%6proc.name`` (exactly 6 characters, cut or padded) and transformed fields
(``%toupper(proc.name)``).

A template is parsed once per rule into literal text and field slots; rendering a detection
joins them (missing values render as ``<NA>``, as in Falco). As in Falco, a field that is not a
Falco field (or is malformed) makes the rule fail to load (:meth:`OutputTemplate.problem`); a
Falco field this sensor does not provide renders ``<NA>`` and is reported as a load warning.
``%proc.aname``/``%proc.apid`` without an index print the process's own entry, as Falco does.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

from otelguard.processors.detection.fields import (
    INVALID, UNAVAILABLE, EventView, FieldProblem, FieldSpec, resolve,
)
from otelguard.processors.detection.operators import CompileError
from otelguard.processors.detection.parser import (
    TRANSFORMERS, ConditionSyntaxError, parse_field_at,
)

NA = "<NA>"
# %[width](field) | %[width]field | %[width]transformer(...) (the transformer parsed separately)
_FIELD = re.compile(r"%(?P<width>[0-9]*)(?:\((?P<paren>[A-Za-z_][\w.]*(?:\[[^\]]*\])?)\)|"
                    r"(?P<bare>[A-Za-z_][\w.]*(?:\[[^\]]*\])?))")
# without an index, Falco prints the process's own entry of these (proc.aname = proc.name)
_OWN_ENTRY = frozenset({"proc.aname", "proc.apid"})


@dataclass(frozen=True)
class Slot:
    text: str  # the field as written
    spec: Optional[FieldSpec]  # the field (for a transformed one: its innermost field)
    arg: Optional[str]
    problem: Optional[FieldProblem]  # why it renders <NA> always (or does not load)
    width: int = 0  # Falco's %Nfield: exactly N characters (cut or padded with blanks)
    get: Optional[Callable[[EventView], Any]] = None  # transformed fields


Part = Union[str, Slot]


@dataclass(frozen=True)
class OutputProblem:
    text: str
    reason: str
    kind: str


@dataclass(frozen=True)
class OutputTemplate:
    parts: tuple[Part, ...]

    @property
    def slots(self) -> tuple[Slot, ...]:
        return tuple(p for p in self.parts if isinstance(p, Slot))

    def problem(self) -> Optional[OutputProblem]:
        """The first slot Falco would refuse (an unknown or malformed field: "invalid
        formatting token"); fields this sensor lacks are not refused (they render <NA>)."""
        for s in self.slots:
            if s.problem is not None and s.problem.kind != UNAVAILABLE:
                return OutputProblem(s.text, f"output field %{s.text}: {s.problem.reason}",
                                     s.problem.kind)
        return None

    def problems(self) -> list[str]:
        """Slots that always render <NA> (Falco fields the sensor does not provide)."""
        return [f"output field %{s.text}: {s.problem.reason}" for s in self.slots
                if s.problem is not None and s.problem.kind == UNAVAILABLE]

    def render(self, ev: EventView) -> str:
        out: list[str] = []
        for p in self.parts:
            if isinstance(p, str):
                out.append(p)
                continue
            if p.get is not None:
                text = render_value(p.get(ev))
            elif p.spec is None:
                text = NA
            else:
                text = render_value(ev.field(p.spec, p.arg))
            if p.width:
                text = text[:p.width].ljust(p.width)
            out.append(text)
        return "".join(out)

    def values(self, ev: EventView) -> dict[str, Any]:
        """Falco's ``output_fields``: each field of the template (as written, ``proc.aname[2]``)
        with its value as JSON has it: numbers stay numbers, a missing value is None (null),
        lists and addresses are their text. Paid only on a detection (~1 µs per field, the
        values are cached by :meth:`render`)."""
        out: dict[str, Any] = {}
        for p in self.parts:
            if isinstance(p, str) or p.text in out:
                continue
            if p.get is not None:
                v = p.get(ev)
            elif p.spec is None:
                v = None
            else:
                v = ev.field(p.spec, p.arg)
            out[p.text] = json_value(v)
        return out


def render_value(v: Any) -> str:
    if v is None:
        return NA
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, (tuple, list)):
        return ",".join(render_value(x) for x in v) if v else NA
    if isinstance(v, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return str(v)
    return str(v)


def json_value(v: Any) -> Any:
    """A field value for a JSON document (Falco's ``output_fields``): None, bool, int, float
    and str as they are, everything else as its output text."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return render_value(v)


def parse_output(text: str) -> OutputTemplate:
    parts: list[Part] = []
    pos = 0
    buf: list[str] = []
    while pos < len(text):
        c = text[pos]
        if c != "%":
            buf.append(c)
            pos += 1
            continue
        if text.startswith("%%", pos):
            buf.append("%")
            pos += 2
            continue
        m = _FIELD.match(text, pos)
        if m is None:
            buf.append(c)
            pos += 1
            continue
        width = int(m.group("width") or 0)
        raw = m.group("paren") or m.group("bare") or ""
        if m.group("bare") and raw in TRANSFORMERS and text.startswith("(", m.end()):
            slot, end = _transformed(text, m.start("bare"), width)
            if buf:
                parts.append("".join(buf))
                buf = []
            parts.append(slot)
            pos = end
            continue
        trailing = ""
        while raw.endswith(".") and "[" not in raw:
            raw, trailing = raw[:-1], "." + trailing
        if buf:
            parts.append("".join(buf))
            buf = []
        parts.append(_slot(raw, width))
        if trailing:
            buf.append(trailing)
        pos = m.end()
    if buf:
        parts.append("".join(buf))
    return OutputTemplate(tuple(parts))


def _transformed(text: str, start: int, width: int) -> tuple[Slot, int]:
    """``%tolower(proc.name)``: the slot and where it ends."""
    from otelguard.processors.detection.compiler import Compiler, UnsupportedField

    try:
        ref, end = parse_field_at(text, start)
    except ConditionSyntaxError as exc:
        bad = text[start:].split(" ", 1)[0]
        return Slot(bad, None, None, FieldProblem(exc.reason, INVALID), width), \
            start + len(bad)
    try:
        get, _ftype = Compiler({}).field_getter(ref, set())
    except UnsupportedField as exc:
        return Slot(str(ref), None, None, FieldProblem(exc.reason, exc.kind), width), end
    except CompileError as exc:
        return Slot(str(ref), None, None, FieldProblem(str(exc), INVALID), width), end
    return Slot(str(ref), None, None, None, width, get), end


def _slot(raw: str, width: int = 0) -> Slot:
    name, arg = raw, None
    if raw.endswith("]") and "[" in raw:
        name, _, rest = raw.partition("[")
        arg = rest[:-1]
    if arg is None and name in _OWN_ENTRY:
        arg = "0"
    spec, rarg, problem = resolve(name, arg)
    return Slot(raw, spec, rarg, problem, width)
