"""The sensor's in-kernel read filter, derived from the loaded rules.

The file probe sends a read-only open to user space only when its path starts with one of its
read prefixes (docs/architecture.md#kernel-facts); opens with write intent always pass. A rule
that judges reads therefore sees only what those prefixes let through. This module computes, from
a rule set, the prefixes its rules need: for every rule that runs on an open event type it takes
the rule's guards (prefilter.py: checks every matching record passes) and looks for one that
bounds the path:

* ``evt.is_open_write``/``evt.is_open_create`` ``= true``: the rule needs no read at all;
* ``fd.name`` (``fd.nameraw``, ``evt.arg.name``) ``=``/``in``/``startswith``/a glob's literal
  head: those paths are the prefixes; ``fd.directory`` ``=``/``in``: ``<dir>/``;
* otherwise (``fd.filename``, ``contains``, ``endswith``, ``pmatch``, no path test) the rule's
  reads are **unbounded**: no prefix short of ``/`` would let them all through, and ``/`` would
  send every read on the node. Such rules are named by ``otelguard rules validate``; they see
  the reads under the prefixes others need, and the site may add prefixes for them
  (``sensor.read_prefixes.extra``).

The result is bounded as the kernel program is (at most ``MAX_PREFIXES`` of ``MAX_PREFIX_LEN``
bytes): prefixes covered by a shorter one are dropped, and while there are too many the
longest are cut back to their parent directory (which only widens). Cost: a walk over the
compiled rules' guards at load time, nothing per record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from pathlib import Path
from typing import Sequence, Union

from otelguard.processors.detection.engine import DEFAULT_RULE_FILES
from otelguard.processors.detection.loader import load_rules
from otelguard.processors.detection.prefilter import Guard, ValueSet
from otelguard.processors.detection.ruleset import Rule

MAX_PREFIXES = 32
MAX_PREFIX_LEN = 64
OPEN_TYPES = ("open", "openat", "openat2")
_WRITE_ONLY = frozenset({"evt.is_open_write", "evt.is_open_create"})
_PATH_FIELDS = frozenset({"fd.name", "fd.nameraw", "evt.arg.name"})
_DIR_FIELDS = frozenset({"fd.directory"})


@dataclass(frozen=True)
class ReadFilter:
    """The read prefixes a rule set needs and the rules no prefix can serve."""

    prefixes: tuple[str, ...]
    unbounded: tuple[str, ...]  # rule names whose reads no prefix bounds
    by_rule: tuple[tuple[str, tuple[str, ...]], ...]  # (rule, its prefixes) for rules reading

    def lines(self) -> list[str]:
        """What ``otelguard rules validate`` prints."""
        out = [f"read filter: {len(self.prefixes)} kernel read prefix(es): "
               + (" ".join(self.prefixes) or "(none: read-only opens are not sent)")]
        for name in self.unbounded:
            out.append(f"read filter: UNBOUNDED {name}: its reads are not bounded by a path "
                       "prefix; it sees reads only under the prefixes above (add its paths "
                       "with sensor.read_prefixes.extra)")
        return out


def read_filter(rules: Iterable[Rule], extra: Iterable[str] = ()) -> ReadFilter:
    """The prefixes ``rules`` need (plus ``extra``), bounded for the kernel program."""
    wanted: list[str] = list(extra)
    unbounded: list[str] = []
    by_rule: list[tuple[str, tuple[str, ...]]] = []
    for rule in rules:
        types = [t for t in OPEN_TYPES if rule.event_types is None or t in rule.event_types]
        needed: set[str] = set()
        bounded = True
        for t in types:
            guards = rule.guards.get(t, rule.guards.get(None, ()))
            got = _rule_prefixes(guards)
            if got is None:
                bounded = False
            else:
                needed |= got
        if not types:
            continue
        if not bounded:
            unbounded.append(rule.name)
        elif needed:
            by_rule.append((rule.name, tuple(sorted(needed))))
            wanted.extend(needed)
    return ReadFilter(bound_prefixes(wanted), tuple(unbounded), tuple(by_rule))


def read_rules_paths(paths: Sequence[str], packaged: bool) -> tuple[str, ...]:
    """``sensor.read_rules`` after the packaged rules when ``packaged`` (``read_rules_packaged``):
    the order a falco_rules stage with empty ``rules`` loads its ``local_rules`` in."""
    return (tuple(str(p) for p in DEFAULT_RULE_FILES) if packaged else ()) + tuple(paths)


def rules_read_filter(paths: Sequence[Union[str, Path]], extra: Iterable[str] = ()) -> ReadFilter:
    """The read filter of the rules files or directories ``paths`` (every enabled rule; raises
    :class:`RulesError` listing the problems when they do not load), plus ``extra``."""
    rs = load_rules(paths)
    rs.raise_if_errors()
    return read_filter(rs.rules, extra)


def _rule_prefixes(guards: tuple[Guard, ...]) -> "set[str] | None":
    """Prefixes one of ``guards`` bounds the rule's reads to; an empty set when the rule needs
    write intent; None when no guard bounds them."""
    for g in guards:
        if all(ref.name in _WRITE_ONLY and vs.eq == {True} and not _loose(vs)
               for ref, vs in g.fields):
            return set()
    for g in guards:
        out: set[str] = set()
        for ref, vs in g.fields:
            got = _field_prefixes(ref.name, vs)
            if got is None:
                break
            out |= got
        else:
            return out
    return None


def _loose(vs: ValueSet) -> bool:
    return bool(vs.prefixes or vs.suffixes or vs.subs or vs.patterns or vs.nets)


def _field_prefixes(name: str, vs: ValueSet) -> "set[str] | None":
    if vs.suffixes or vs.subs or vs.patterns or vs.nets:
        return None
    values = {str(v) for v in vs.eq} | vs.prefixes
    if not values or not all(v.startswith("/") for v in values):
        return None  # relative or empty: any path
    if name in _PATH_FIELDS:
        return values
    if name in _DIR_FIELDS:
        return {v.rstrip("/") + "/" for v in vs.eq} | vs.prefixes
    return None


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
