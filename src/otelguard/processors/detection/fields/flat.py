"""The flat record view: per record, a dict of only the attributes the loaded rules read from
records of its event name, built natively from the record's wire bytes in one pass
(docs/architecture.md, "Falco rule semantics", Evaluation).

Why: an :class:`~.view.EventView` reading through upb pays a Python wrapper per element touched
(~0.3 µs per key, more for lists), and a record lacking a key a rule asks for is serialised
anyway (to prove the key absent) and then indexed whole. The native walk
(``otelguard_native.FlatView``, native/src/flatview.rs) turns those same bytes into the dict of
wanted values at once, and answers every absent wanted key without another read.

Which keys are wanted is learnt per event name from the reads the compiled matchers, output
fields and the stage state make: a key a view is asked for that the walk did not look for is
read through upb (exact, as before) and added to its event name's set, so the next record's walk
includes it. Which records are walked is learnt per event name too: an event name whose records
mostly need their bytes anyway (execs, connects, DNS: a rule asks for a key they lack) is walked
as each view is made (*eager*); the others (file opens: every key read is where the last record
had it) keep the positional upb reads and are walked only when one needs its bytes. Serialising
every record (or a whole ScopeLogs) costs more than the reads it saves on the latter
(docs/benchmarks.md, "Flat record view").

Without the extension (``otelguard_native`` not built) or on bytes it will not read, records
are read through upb; the values are the same either way (tests/processors/detection/
test_flat.py). Bounded: at most ``max_events`` event names with ``max_keys`` keys each; beyond
that, reads fall back to upb.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

_NativeFlatView: Any
try:  # the native extension is optional (scripts/setup.sh builds it when cargo is there)
    from otelguard_native import FlatView as _NativeFlatView
except ImportError:  # pragma: no cover - exercised on machines without cargo
    _NativeFlatView = None

NATIVE = _NativeFlatView is not None
_NONE: frozenset[str] = frozenset()
LEARN_RECORDS = 64  # records of an event name seen before it is judged eager or lazy


class FlatRecords:
    """Learnt key sets and walk modes per event name, and their native walkers (one per
    engine)."""

    def __init__(self, *, native: bool = True, max_events: int = 256, max_keys: int = 256) -> None:
        self.enabled = native and NATIVE
        self.max_events = max_events
        self.max_keys = max_keys
        self.learnt: dict[str, set[str]] = {}  # event name -> keys asked of its records
        self._known: dict[str, frozenset[str]] = {}  # the set its walker looks for
        self._walkers: dict[str, Any] = {}
        # event name -> True (walk each record as its view is made) / False (when it needs its
        # bytes); absent while learning, with [records seen, records that needed their bytes]
        self.eager: dict[str, bool] = {}
        self._counts: dict[str, list[int]] = {}
        self.failed = 0  # records whose bytes the walk refused (read through upb)

    def walk(self, event_name: str, wire: bytes) -> Optional[dict[str, Any]]:
        """The wanted attributes of the record serialised as ``wire``, or None (read through
        upb); :meth:`known` then names the keys the walk looked for."""
        keys = self.learnt.get(event_name)
        if keys is None or not self.enabled:
            return None
        walker = self._walkers.get(event_name)
        if walker is None or len(keys) != len(self._known[event_name]):
            known = self._known[event_name] = frozenset(keys)
            walker = self._walkers[event_name] = _NativeFlatView(known)
        try:
            values: dict[str, Any] = walker.record(wire)
        except ValueError:
            self.failed += 1
            return None
        return values

    def positions(self, event_name: str, wire: bytes) -> dict[str, int]:
        """Where the keys the last walk looked for sit among the record's attributes (for the
        positional upb reads of records that are not walked, see :class:`~.view.AttrLayouts`)."""
        walker = self._walkers.get(event_name)
        places: dict[str, int] = {}
        if walker is not None:
            try:
                places = walker.positions(wire)
            except ValueError:
                pass
        return places

    def picker(self, keys: Iterable[str]) -> Any:
        """A native walker over ``keys`` (its ``select`` cuts their attributes from a record's
        bytes: the detection stage's evidence copy)."""
        return _NativeFlatView(set(keys))

    def known(self, event_name: str) -> frozenset[str]:
        """The keys the last walk of an ``event_name`` record looked for."""
        return self._known.get(event_name, _NONE)

    def learn(self, event_name: str, key: str) -> None:
        """``key`` was asked of an ``event_name`` record and the walk did not look for it."""
        keys = self.learnt.get(event_name)
        if keys is None:
            if len(self.learnt) >= self.max_events:
                return
            keys = self.learnt[event_name] = set()
        if len(keys) < self.max_keys:
            keys.add(key)

    def seen(self, event_name: str, needed_bytes: bool) -> None:
        """A record of ``event_name`` (still learning) was made a view, or needed its bytes."""
        counts = self._counts.get(event_name)
        if counts is None:
            if len(self._counts) >= self.max_events:
                return
            counts = self._counts[event_name] = [0, 0]
        counts[needed_bytes] += 1
        if counts[0] >= LEARN_RECORDS and self.enabled:
            self.eager[event_name] = 2 * counts[1] >= counts[0]


__all__ = ["NATIVE", "FlatRecords"]
