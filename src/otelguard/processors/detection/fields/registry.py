"""The field registry: every Falco field the engine understands, as one :class:`FieldSpec` each.

Rules are written against Falco's fields (``proc.name``, ``fd.sip``, ``k8s.ns.name``); records
carry OTel semantic-convention keys (docs/architecture.md#attribute-schema). Each field class module of this
package (``evt``, ``proc``, ``user``, ``fd``, ``container``, ``k8s``, ``extensions``) registers
its fields here with :func:`define` or :func:`unavailable`; :data:`FIELDS` is complete once the
package is imported. The compiler refuses (and reports, naming the field) any field that is not
here or is declared ``available=False``, so a rule never silently matches on data we do not
have. Extractors return ``None`` for "missing", which every operator treats as "does not
match", as Falco does.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable, Optional

from otelguard.processors.detection.fields.view import EventView

_K8S = "k8s."  # a Falco field class prefix, not an attribute key (see k8s.py)


class FieldType(Enum):
    STR = "string"
    NUM = "number"
    BOOL = "bool"
    IP = "ipaddr"  # compared to IPs, or contained in CIDRs
    NET = "ipnet"  # fd.net & co: "in this CIDR"; the value is the tuple of candidate IPs
    MULTI = "multi"  # proc.aname without index: any of the values (tuple) matches
    LIST = "list"  # a list field: `in` = all in set, `intersects` = any in set


Extractor = Callable[[EventView, Optional[str]], Any]
_ANY_OF_WITHOUT_INDEX = frozenset({"proc.aname", "proc.apid"})


@dataclass(frozen=True)
class FieldSpec:
    """A Falco field: its type, how we derive it, and which record attributes are evidence."""

    name: str
    type: FieldType
    source: str  # human text for docs/coverage: the attribute or the derivation
    extract: Extractor
    keys: tuple[str, ...] = ()  # record attribute keys copied to a detection as evidence
    arg: str = "none"  # "none" | "optional" | "required" | "index"
    available: bool = True  # False: known to Falco, not provided by our agent
    arg_ok: Optional[Callable[[Optional[str]], Optional[str]]] = None  # -> reason if unsupported

    def type_for(self, arg: Optional[str]) -> FieldType:
        """Indexed fields (proc.aname) without an index mean "any of them"."""
        if self.arg == "index" and arg is None and self.name in _ANY_OF_WITHOUT_INDEX:
            return FieldType.MULTI
        return self.type

    def problem(self, arg: Optional[str]) -> Optional["FieldProblem"]:
        """None when ``name[arg]`` can be evaluated, else why not: a malformed use (a load
        error, as in Falco) or a Falco field this sensor does not provide (the rule cannot run
        here)."""
        if self.arg == "none" and arg is not None:
            return FieldProblem(f"field {self.name} takes no argument", INVALID)
        if self.arg == "required" and arg is None:
            return FieldProblem(f"field {self.name} needs an argument", INVALID)
        if self.arg == "index" and arg is not None and not arg.isdigit():
            return FieldProblem(f"field {self.name} needs a numeric index, got [{arg}]", INVALID)
        if not self.available:
            return FieldProblem(f"field {self.name} is not provided by the otelguard agent "
                                f"({self.source})", UNAVAILABLE)
        if self.arg_ok is not None:
            reason = self.arg_ok(arg)
            if reason is not None:
                return FieldProblem(f"field {self.name}[{arg}]: {reason}" if arg is not None
                                    else f"field {self.name}: {reason}", UNAVAILABLE)
        return None


UNKNOWN = "unknown"  # not a Falco field (misspelled): a load error unless skip-if-unknown-filter
INVALID = "invalid"  # a Falco field used wrongly (argument missing or malformed): a load error
UNAVAILABLE = "unavailable"  # a Falco field this sensor does not provide: the rule cannot run


@dataclass(frozen=True)
class FieldProblem:
    """Why a field reference cannot be evaluated, and which kind of why (see the constants)."""

    reason: str
    kind: str


class AttrField:
    """Extractor of a field that is one record attribute as is (the compiler reads it through
    :meth:`EventView.attr` directly, whose own per-record cache suffices)."""

    __slots__ = ("key",)

    def __init__(self, key: str) -> None:
        self.key = key

    def __call__(self, ev: EventView, _arg: Optional[str]) -> Any:
        return ev.attr(self.key)


class ResourceField:
    """Extractor of a field that is one resource attribute as is."""

    __slots__ = ("key",)

    def __init__(self, key: str) -> None:
        self.key = key

    def __call__(self, ev: EventView, _arg: Optional[str]) -> Any:
        return ev.res.get(self.key)


def as_int(v: Any) -> Optional[int]:
    """A numeric attribute as an int (the agent may send numbers as strings); else None."""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        try:
            return int(v, 0)
        except ValueError:
            return None
    if isinstance(v, float):
        return int(v)
    return None


def _na(reason: str) -> Extractor:
    return lambda ev, _arg: None


FIELDS: dict[str, FieldSpec] = {}


def define(name: str, ftype: FieldType, source: str, extract: Extractor,
           keys: tuple[str, ...] = (), arg: str = "none",
           arg_ok: Optional[Callable[[Optional[str]], Optional[str]]] = None) -> None:
    """Register a field the agent's records provide."""
    FIELDS[name] = FieldSpec(name, ftype, source, extract, keys, arg, True, arg_ok)


def unavailable(name: str, ftype: FieldType, reason: str, arg: str = "none") -> None:
    """Register a field Falco has and the agent does not provide: rules using it skip."""
    FIELDS[name] = FieldSpec(name, ftype, reason, _na(reason), (), arg, False)


def resolve(name: str, arg: Optional[str]
            ) -> tuple[Optional[FieldSpec], Optional[str], Optional[FieldProblem]]:
    """(spec, arg, None) or (None, None, problem). Accepts Falco's ``evt.arg.flags`` spelling."""
    spec = FIELDS.get(name)
    if spec is None:
        # dotted argument forms: evt.arg.flags, evt.rawarg.res, k8s.pod.label.app
        for prefix in ("evt.arg.", "evt.rawarg.", _K8S + "pod.label.", "container.mount.dest."):
            if name.startswith(prefix) and arg is None:
                spec = FIELDS.get(prefix[:-1])
                arg = name[len(prefix):]
                break
    if spec is None:
        return None, None, FieldProblem(f"unknown field {name}", UNKNOWN)
    problem = spec.problem(arg)
    if problem is not None:
        return None, None, problem
    return spec, arg, None
