"""The record as rules see it: :class:`EventView` over one OTLP LogRecord and its Resource.

Every field class module (``proc``, ``fd``, ``evt``, ...) reads records only through this view.
Cost: an :class:`EventView` reads only the attributes asked for, each at the position its
event name's earlier records had it (one upb element access, verified by key); absent keys are
proven absent from the record's wire bytes (one serialisation, only when a rule asks for a key
the record lacks). Values and fields are computed at most once per record (cached in the view),
so twenty rules asking for ``proc.name`` pay once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from otelguard.otlp.messages import from_any

if TYPE_CHECKING:
    from otelguard.processors.detection.fields.flat import FlatRecords
    from otelguard.processors.detection.fields.registry import FieldSpec

MISSING: Any = object()  # "not computed yet" in the per-record caches (None is a value)
_NO_KEYS: frozenset[str] = frozenset()


class AttrLayouts:
    """Where each attribute key sat in earlier records, per event name (one per engine).

    A producer writes the records of one event type with the same keys in the same order, so the
    position a key had in the last fully indexed record of that event name is, almost always,
    where it is now: reading it there is one element access and one key comparison instead of a
    pass over ~30 attributes (upb builds a Python object for every element touched, ~0.2-0.4 µs
    each). Positions are hints only; every hit is verified against the key. Duplicate keys are
    not allowed in OTLP; if a record has them anyway, a hit reads the one at the remembered
    position where a full read takes the last. Bounded: at most ``max_events`` event names and
    ``max_keys`` keys each (beyond that, no new hints are kept).
    """

    def __init__(self, max_events: int = 256, max_keys: int = 256) -> None:
        self.max_events = max_events
        self.max_keys = max_keys
        self._by_event: dict[str, dict[str, int]] = {}

    def for_event(self, name: str) -> dict[str, int]:
        layout = self._by_event.get(name)
        if layout is None:
            layout = {}
            if len(self._by_event) < self.max_events:
                self._by_event[name] = layout
        return layout

    def learn(self, layout: dict[str, int], index: dict[str, int]) -> None:
        if len(layout) + len(index) <= self.max_keys:
            layout.update(index)
        else:
            for k, i in index.items():
                if k in layout or len(layout) < self.max_keys:
                    layout[k] = i


def _value(av: AnyValue) -> Any:
    """``from_any`` for the values rules read, without ``WhichOneof`` where a non-default member
    read proves the case (upb's ``WhichOneof`` costs more than the read): arrays of strings are
    the common list (command args, ancestors, capabilities), read from their wire bytes."""
    v: Any = av.string_value
    if v:
        return v
    v = av.int_value
    if v:
        return v
    strings = _string_array(av.SerializeToString())
    if strings is not None:
        return strings
    kind = av.WhichOneof("value")
    if kind == "array_value":
        out = []
        for x in av.array_value.values:
            s = x.string_value
            out.append(s if s else _value(x))
        return out
    if kind == "bool_value":
        return av.bool_value
    if kind == "int_value":
        return 0
    if kind == "string_value":
        return ""
    return from_any(av)


def _string_array(wire: bytes) -> Optional[list[str]]:
    """The elements of an AnyValue ``array_value`` whose elements are all strings, parsed from
    the AnyValue's wire bytes; None for anything else (the caller then reads it through upb).
    One serialisation and a slice per element instead of two upb wrappers per element: ~0.8
    instead of ~1.4 µs for a two-word command line. Exact: each element must be exactly one
    ``string_value`` field filling its AnyValue, else None."""
    n = len(wire)
    if n < 2 or wire[0] != 0x2A:  # AnyValue field 5 (array_value), length-delimited
        return None
    size, i = _varint(wire, 1)
    if i + size != n:
        return None
    out: list[str] = []
    try:
        while i < n:
            if wire[i] != 0x0A:  # ArrayValue field 1 (values), length-delimited
                return None
            elem = wire[i + 1]
            if elem < 0x80:
                i += 2
            else:
                elem, i = _varint(wire, i + 1)
            end = i + elem
            if end > n or elem < 2 or wire[i] != 0x0A:  # AnyValue field 1 (string_value)
                return None
            length = wire[i + 1]
            if length < 0x80:
                j = i + 2
            else:
                length, j = _varint(wire, i + 1)
            if j + length != end:
                return None
            out.append(wire[j:end].decode())
            i = end
    except (IndexError, UnicodeDecodeError):
        return None
    return out


def _varint(wire: bytes, i: int) -> tuple[int, int]:
    """(value, next offset) of the varint at ``i``; a truncated one ends past the bytes (the
    callers' bounds checks then refuse the value)."""
    n = len(wire)
    if i < n and wire[i] < 0x80:
        return wire[i], i + 1
    value, shift = 0, 0
    while i < n:
        b = wire[i]
        value |= (b & 0x7F) << shift
        i += 1
        if b < 0x80:
            return value, i
        shift += 7
    return value, n + 1


_TOKENS: dict[str, bytes] = {}


def _key_token(key: str) -> bytes:
    """The wire bytes a KeyValue with this key necessarily contains (field 1, length, UTF-8)."""
    tok = _TOKENS.get(key)
    if tok is None:
        raw = key.encode()
        n, size = len(raw), bytearray()
        while True:
            byte = n & 0x7F
            n >>= 7
            size.append(byte | (0x80 if n else 0))
            if not n:
                break
        tok = b"\n" + bytes(size) + raw
        if len(_TOKENS) < 4096:
            _TOKENS[key] = tok
    return tok


class EventView:
    """One record seen through Falco's eyes: resource + record attributes + engine state.

    ``res`` is the resource attribute dict shared by every record of a ResourceLogs (built once
    per Resource by the engine). Record attributes are read one key at a time, never all at once:
    a key is looked for at the position its event name's :class:`AttrLayouts` remembers (verified);
    a key not there is proven absent by the record's wire bytes lacking its key token (one C-speed
    serialisation per record, only when needed), and only otherwise are all keys indexed (once
    per record, later duplicates winning, as before). Values are converted on first use and kept.
    """

    __slots__ = ("record", "res", "num", "state", "cache", "event_name", "_kvs", "_vals",
                 "_layout", "_layouts", "_index", "_wire", "_known", "_flat", "_learnt")

    def __init__(self, record: LogRecord, res: dict[str, Any], num: int, state: Any = None,
                 layouts: Optional[AttrLayouts] = None,
                 flat: Optional["FlatRecords"] = None) -> None:
        """``flat``: the engine's flat record view (:mod:`.flat`); keys its walk of this record
        looked for are answered from the walk, others read through upb."""
        self.record = record
        self.res = res
        self.num = num
        self.state = state
        self.cache: dict[str, Any] = {}
        name = self.event_name = record.event_name
        self._kvs = record.attributes
        self._vals: dict[str, Any] = {}
        self._known: frozenset[str] = _NO_KEYS
        self._flat = flat
        self._wire: Optional[bytes] = None
        self._learnt: Optional[set[str] | frozenset[str]] = None
        if flat is not None:
            self._learnt = flat.learnt.get(name, _NO_KEYS)
            eager = flat.eager.get(name)
            if eager:
                wire = self._wire = record.SerializeToString()
                walked = flat.walk(name, wire)
                if walked is not None:
                    self._vals = walked
                    self._known = flat.known(name)
            elif eager is None:
                flat.seen(name, False)
        self._layouts = layouts
        layout = None if layouts is None else layouts._by_event.get(name)
        if layout is None:
            layout = {} if layouts is None else layouts.for_event(name)
        self._layout: dict[str, int] = layout
        self._index: Optional[dict[str, int]] = None

    def wire(self) -> bytes:
        """The record's serialized bytes (serialized once per record, when first needed)."""
        wire = self._wire
        if wire is None:
            wire = self._wire = self.record.SerializeToString()
        return wire

    def attr(self, key: str) -> Any:
        """A record attribute as a Python value, or None."""
        vals = self._vals
        v = vals.get(key, MISSING)
        if v is not MISSING:
            return v
        if key in self._known:  # the flat view looked for it: absent
            vals[key] = None
            return None
        learnt = self._learnt
        if learnt is not None and key not in learnt:  # (None: not learning)
            flat = self._flat
            assert flat is not None
            flat.learn(self.event_name, key)
            self._learnt = flat.learnt.get(self.event_name)  # created by the first key
        if self._index is None:
            i = self._layout.get(key)
            if i is not None:
                try:
                    kv = self._kvs[i]
                except IndexError:
                    pass
                else:
                    if kv.key == key:
                        # a non-default member read proves the oneof's case; WhichOneof costs
                        # more than the read itself in upb
                        av = kv.value
                        v = av.string_value
                        if not v:
                            v = av.int_value
                            if not v:
                                v = _value(av)
                        vals[key] = v
                        return v
        v = vals[key] = self._lookup(key)
        return v

    def _lookup(self, key: str) -> Any:
        index = self._index
        if index is None:
            wire = self._wire
            if wire is None:
                wire = self._wire = self.record.SerializeToString()
                flat = self._flat
                if flat is not None:  # the bytes are here: walk them for every wanted key
                    name = self.event_name
                    if name not in flat.eager:
                        flat.seen(name, True)
                    walked = flat.walk(name, wire)
                    if walked is not None:
                        self._vals.update(walked)  # the values read so far, unchanged
                        known = self._known = flat.known(name)
                        if key in known:
                            if key in walked:  # not where the layout said: learn where it is
                                places = flat.positions(name, wire)
                                if self._layouts is not None:
                                    self._layouts.learn(self._layout, places)
                                else:
                                    self._layout.update(places)
                            return walked.get(key)
            tok = _TOKENS.get(key)
            if (tok if tok is not None else _key_token(key)) not in wire:
                return None  # exact: a present key's token is always in the record's bytes
            index = self._index = {kv.key: i for i, kv in enumerate(self._kvs)}
            if self._layouts is not None:
                self._layouts.learn(self._layout, index)
            else:
                self._layout.update(index)
        i = index.get(key)
        return None if i is None else _value(self._kvs[i].value)

    def field(self, spec: "FieldSpec", arg: Optional[str]) -> Any:
        """Field value with per-record caching (the key includes the argument)."""
        key = spec.name if arg is None else f"{spec.name}[{arg}]"
        cache = self.cache
        v = cache.get(key, MISSING)
        if v is MISSING:
            v = cache[key] = spec.extract(self, arg)
        return v
