"""The sensor's in-kernel read filter, derived from the loaded rules.

The file probe sends a read-only open to user space only when its path is one of its read
paths or starts with one of its read prefixes (docs/architecture.md#kernel-facts); opens with
write intent always pass. A rule that judges reads therefore sees only what those let through.
This module computes, from a rule set, what its rules need: for every rule that runs on an open
event type it takes the rule's guards (prefilter.py: checks every matching record passes) and
looks for one that bounds the path:

* ``evt.is_open_write``/``evt.is_open_create`` ``= true``: the rule needs no read at all;
* ``fd.name`` (``fd.nameraw``, ``evt.arg.name``) ``=``/``in``: those exact paths (the kernel
  compares the whole name: ``/etc/shadow`` does not send ``/etc/shadow-``);
  ``startswith``/a glob's literal head: those prefixes; ``fd.directory`` ``=``/``in``:
  the prefix ``<dir>/``;
* ``fd.nameraw contains "../"`` (Falco's ``directory_traversal``): the kernel sends every
  read-only open whose path is relative or not normalised while any read path is watched, and
  user space keeps those with ``../`` in them, so such a rule needs no entry (``traversal``);
* otherwise (``fd.filename``, ``contains``, ``endswith``, ``pmatch``, no path test) the rule's
  reads are **unbounded**: no prefix short of ``/`` would let them all through, and ``/`` would
  send every read on the node. Such rules are named by ``otelguard rules validate``; they see
  the reads under the prefixes others need, and the site may add prefixes for them
  (``sensor.probe.read_path_prefixes``).

The result is bounded as the kernel program is (at most ``MAX_PREFIXES`` prefixes and
``MAX_PATHS`` exact paths, each of at most ``MAX_PREFIX_LEN`` bytes): paths and prefixes covered
by a shorter prefix are dropped, a path too long becomes its directory's prefix, and while
there are too many the longest are cut back to their parent directory (which only widens).
Cost: a walk over the compiled rules' guards at load time, nothing per record.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence, Union

from otelguard.processors.detection.engine import DEFAULT_RULE_FILES
from otelguard.processors.detection.loader import load_rules
from otelguard.processors.detection.prefilter import Guard, ValueSet
from otelguard.processors.detection.ruleset import Rule

MAX_PREFIXES = 32
MAX_PATHS = 64
MAX_PREFIX_LEN = 64
OPEN_TYPES = ("open", "openat", "openat2")
_WRITE_ONLY = frozenset({"evt.is_open_write", "evt.is_open_create"})
_PATH_FIELDS = frozenset({"fd.name", "fd.nameraw", "evt.arg.name"})
_DIR_FIELDS = frozenset({"fd.directory"})


@dataclass(frozen=True)
class ReadFilter:
    """The read paths and prefixes a rule set needs and the rules neither can serve."""

    prefixes: tuple[str, ...]
    unbounded: tuple[str, ...]  # rule names whose reads no prefix bounds
    by_rule: tuple[tuple[str, tuple[str, ...]], ...]  # (rule, its paths/prefixes) for rules reading
    paths: tuple[str, ...] = ()  # exact names (a read of exactly this path is sent)
    traversal: tuple[str, ...] = ()  # rule names served by the kernel's traversal pass

    def lines(self) -> list[str]:
        """What ``otelguard rules validate`` and the sensor's start print."""
        out = [f"read filter: {len(self.paths)} kernel read path(s): "
               + (" ".join(self.paths) or "(none)"),
               f"read filter: {len(self.prefixes)} kernel read prefix(es): "
               + (" ".join(self.prefixes) or "(none)")]
        if not self.paths and not self.prefixes:
            out.append("read filter: read-only opens are not sent (no loaded rule reads)")
        for name in self.traversal:
            out.append(f"read filter: traversal {name}: its reads (a path with ../) are sent "
                       "while any read path or prefix is watched")
        for name in self.unbounded:
            out.append(f"read filter: UNBOUNDED {name}: its reads are not bounded by a path "
                       "prefix; it sees reads only under the paths and prefixes above (add its "
                       "paths with sensor.probe.read_path_prefixes)")
        return out


def read_filter(rules: Iterable[Rule], extra: Iterable[str] = (),
                extra_paths: Iterable[str] = ()) -> ReadFilter:
    """The paths and prefixes ``rules`` need (plus ``extra`` prefixes and ``extra_paths``),
    bounded for the kernel program."""
    wanted: list[str] = list(extra)
    exact: list[str] = list(extra_paths)
    unbounded: list[str] = []
    traversal: list[str] = []
    by_rule: list[tuple[str, tuple[str, ...]]] = []
    for rule in rules:
        types = [t for t in OPEN_TYPES if rule.event_types is None or t in rule.event_types]
        needed: set[str] = set()
        needed_paths: set[str] = set()
        bounded = True
        for t in types:
            guards = rule.guards.get(t, rule.guards.get(None, ()))
            got = _rule_prefixes(guards)
            if got is None:
                bounded = False
            else:
                needed |= got[0]
                needed_paths |= got[1]
        if not types:
            continue
        if not bounded and all(_traversal(rule.guards.get(t, rule.guards.get(None, ())))
                               for t in types):
            traversal.append(rule.name)
        elif not bounded:
            unbounded.append(rule.name)
        elif needed or needed_paths:
            by_rule.append((rule.name, tuple(sorted(needed | needed_paths))))
            wanted.extend(needed)
            exact.extend(needed_paths)
    prefixes, paths = bound_filter(wanted, exact)
    return ReadFilter(prefixes, tuple(unbounded), tuple(by_rule), paths, tuple(traversal))


def read_rules_paths(paths: Sequence[str], packaged: bool) -> tuple[str, ...]:
    """``sensor.read_rules`` after the packaged rules when ``packaged`` (``read_rules_packaged``):
    the order a falco_rules stage with empty ``rules`` loads its ``local_rules`` in."""
    return (tuple(str(p) for p in DEFAULT_RULE_FILES) if packaged else ()) + tuple(paths)


def rules_read_filter(paths: Sequence[Union[str, Path]], extra: Iterable[str] = (),
                      extra_paths: Iterable[str] = ()) -> ReadFilter:
    """The read filter of the rules files or directories ``paths`` (every enabled rule; raises
    :class:`RulesError` listing the problems when they do not load), plus ``extra`` prefixes
    and ``extra_paths``."""
    rs = load_rules(paths)
    rs.raise_if_errors()
    return read_filter(rs.rules, extra, extra_paths)


def _rule_prefixes(guards: tuple[Guard, ...]) -> "tuple[set[str], set[str]] | None":
    """(prefixes, exact paths) one of ``guards`` bounds the rule's reads to; both empty when
    the rule needs write intent; None when no guard bounds them."""
    for g in guards:
        if all(ref.name in _WRITE_ONLY and vs.eq == {True} and not _loose(vs)
               for ref, vs in g.fields):
            return set(), set()
    for g in guards:
        prefixes: set[str] = set()
        paths: set[str] = set()
        for ref, vs in g.fields:
            got = _field_prefixes(ref.name, vs)
            if got is None:
                break
            prefixes |= got[0]
            paths |= got[1]
        else:
            return prefixes, paths
    return None


def _traversal(guards: tuple[Guard, ...]) -> bool:
    """One of ``guards`` requires ``../`` in the path as passed (``fd.nameraw``)."""
    return any(g.fields and all(ref.name == "fd.nameraw" and vs.subs and
                                all("../" in v for v in vs.subs) and
                                not (vs.eq or vs.prefixes or vs.suffixes or vs.patterns)
                                for ref, vs in g.fields) for g in guards)


def _loose(vs: ValueSet) -> bool:
    return bool(vs.prefixes or vs.suffixes or vs.subs or vs.patterns or vs.nets)


def _field_prefixes(name: str, vs: ValueSet) -> "tuple[set[str], set[str]] | None":
    if vs.suffixes or vs.subs or vs.patterns or vs.nets:
        return None
    values = {str(v) for v in vs.eq} | vs.prefixes
    if not values or not all(v.startswith("/") for v in values):
        return None  # relative or empty: any path
    if name in _PATH_FIELDS:
        return set(vs.prefixes), {str(v) for v in vs.eq}
    if name in _DIR_FIELDS:
        return {str(v).rstrip("/") + "/" for v in vs.eq} | vs.prefixes, set()
    return None


def bound_filter(prefixes: Iterable[str], paths: Iterable[str] = ()
                 ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(prefixes, exact paths) deduplicated and bounded for the kernel program: a path under a
    kept prefix is dropped, a path too long (or not ASCII) becomes its directory's prefix, and
    while there are more than ``MAX_PATHS`` paths the longest becomes its directory's prefix;
    then the prefixes are bounded as :func:`bound_prefixes` does. Never narrower."""
    work = {p for p in prefixes if p.startswith("/")}
    exact: set[str] = set()
    for p in paths:
        if not p.startswith("/"):
            continue
        if len(p) > MAX_PREFIX_LEN or not p.isascii() or p.endswith("/"):
            work.add(_parent(p) if not p.endswith("/") else p)
        else:
            exact.add(p)
    while len(exact) > MAX_PATHS:
        longest = max(exact, key=lambda p: (len(p), p))
        exact.discard(longest)
        work.add(_parent(longest))
    kept = bound_prefixes(work)
    return kept, tuple(sorted(p for p in exact if not any(p.startswith(q) for q in kept)))


def bound_prefixes(prefixes: Iterable[str]) -> tuple[str, ...]:
    """Deduplicated, covered ones dropped, at most ``MAX_PREFIXES`` of ``MAX_PREFIX_LEN``
    ASCII bytes: a prefix too long, or the longest while there are too many, is cut back to
    its parent directory (``/etc/ssh/sshd_config`` -> ``/etc/ssh/``); never narrower."""
    work = {_fit(p) for p in prefixes if p.startswith("/")}
    while True:
        kept = _uncovered(work)
        if len(kept) <= MAX_PREFIXES:
            return kept
        longest = max(kept, key=lambda p: (len(p), p))
        work = set(kept) - {longest} | {_parent(longest)}


def _fit(prefix: str) -> str:
    p = prefix
    while p != "/" and (len(p) > MAX_PREFIX_LEN or not p.isascii()):
        p = _parent(p)
    return p


def _parent(prefix: str) -> str:
    """The directory above ``prefix`` with a trailing ``/`` (``/`` at the top)."""
    cut = prefix.rstrip("/").rfind("/")
    return prefix[:cut + 1] if cut > 0 else "/"


def _uncovered(prefixes: set[str]) -> tuple[str, ...]:
    out: list[str] = []
    for p in sorted(prefixes):
        if not any(p.startswith(q) for q in out):
            out.append(p)
    return tuple(out)
