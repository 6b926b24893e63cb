"""Falco output templates: ``%field``, ``%field[N]``, ``%evt.arg.flags``, ``%(field)``, ``%%``.

A template is parsed once per rule into literal text and field slots; rendering a detection
joins them (missing values render as ``<NA>``, as in Falco). Fields the engine does not know are
kept as ``<NA>`` slots and reported once as load warnings, so an output never blocks a rule.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Optional, Union

from otelguard.processors.detection.fields import EventView, FieldSpec, resolve

NA = "<NA>"
_FIELD = re.compile(r"%(?:\((?P<paren>[A-Za-z_][\w.]*(?:\[[^\]]*\])?)\)|"
                    r"(?P<bare>[A-Za-z_][\w.]*(?:\[[^\]]*\])?))")


@dataclass(frozen=True)
class Slot:
    text: str  # the field as written
    spec: Optional[FieldSpec]
    arg: Optional[str]
    problem: Optional[str]  # why it renders <NA> always


Part = Union[str, Slot]


@dataclass(frozen=True)
class OutputTemplate:
    parts: tuple[Part, ...]

    @property
    def slots(self) -> tuple[Slot, ...]:
        return tuple(p for p in self.parts if isinstance(p, Slot))

    def problems(self) -> list[str]:
        return [f"output field %{s.text}: {s.problem}" for s in self.slots if s.problem]

    def render(self, ev: EventView) -> str:
        out: list[str] = []
        for p in self.parts:
            if isinstance(p, str):
                out.append(p)
            elif p.spec is None:
                out.append(NA)
            else:
                out.append(render_value(ev.field(p.spec, p.arg)))
        return "".join(out)


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
        raw = m.group("paren") or m.group("bare") or ""
        trailing = ""
        while raw.endswith(".") and "[" not in raw:
            raw, trailing = raw[:-1], "." + trailing
        if buf:
            parts.append("".join(buf))
            buf = []
        parts.append(_slot(raw))
        if trailing:
            buf.append(trailing)
        pos = m.end()
    if buf:
        parts.append("".join(buf))
    return OutputTemplate(tuple(parts))


def _slot(raw: str) -> Slot:
    name, arg = raw, None
    if raw.endswith("]") and "[" in raw:
        name, _, rest = raw.partition("[")
        arg = rest[:-1]
    spec, rarg, reason = resolve(name, arg)
    return Slot(raw, spec, rarg, reason)
