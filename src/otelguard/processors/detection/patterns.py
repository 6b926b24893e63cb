"""Falco's pattern operators: ``glob``/``iglob`` (fnmatch(3)) and ``pmatch`` (path prefixes).

Falco (libs ``filter_compare.cpp``) evaluates ``glob`` with glibc ``fnmatch(pattern, value, 0)``
and ``iglob`` with ``FNM_CASEFOLD``; ``pmatch`` with libs' path prefix search. Python's
:mod:`fnmatch` differs from fnmatch(3) where it matters for rules: it has no backslash escape,
and it reads ``[^...]`` as a set containing ``^`` where glibc negates. So patterns are
translated here, once per check at load time, into an anchored regular expression with
fnmatch(3)'s meaning (flags 0: ``*`` and ``?`` match ``/`` and a leading ``.``; ``\\x`` is a
literal ``x``; a trailing lone ``\\`` never matches; ``[!...]`` and ``[^...]`` negate; ``]``
first in a set is literal; POSIX classes ``[:alpha:]`` etc.; an unclosed ``[`` is a literal).
Characters are compared as code points, which equals glibc's byte comparison in the C locale
for ASCII (rules are ASCII in practice). tests/processors/detection/test_patterns.py compares
the translation with the C library's fnmatch through ctypes.

``pmatch`` (libs ``prefix_search.h``): a value matches when one of the search paths is a prefix
of it component by component; paths are split on ``/`` with empty components dropped (so
``//`` and a trailing ``/`` do not matter), and a search component holding ``*``, ``?`` or
``[`` matches one value component by fnmatch(3).
"""

from __future__ import annotations

import re
from typing import Callable, Optional

_CLASSES = {
    "alpha": "a-zA-Z", "digit": "0-9", "alnum": "a-zA-Z0-9", "upper": "A-Z", "lower": "a-z",
    "space": r" \t\n\r\f\v", "blank": r" \t", "punct": re.escape("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"),
    "xdigit": "0-9A-Fa-f", "cntrl": r"\x00-\x1f\x7f", "print": r"\x20-\x7e", "graph": r"\x21-\x7e",
}


def _bracket(pat: str, i: int) -> Optional[tuple[str, int]]:
    """The regex class for the bracket expression opening at ``pat[i] == '['``, and the index
    after it; None when it does not close (the ``[`` is then a literal)."""
    j = i + 1
    n = len(pat)
    negate = j < n and pat[j] in "!^"
    if negate:
        j += 1
    parts: list[str] = []  # compared case-folded under FNM_CASEFOLD
    exact: list[str] = []  # [:class:], [=c=], [.c.]: glibc tests the character as it is
    first = True
    while True:
        if j >= n:
            return None
        c = pat[j]
        if c == "]" and not first:
            j += 1
            break
        first = False
        if c == "[" and j + 1 < n and pat[j + 1] in ":=.":
            kind = pat[j + 1]
            end = pat.find(kind + "]", j + 2)
            if end < 0:
                return None
            name = pat[j + 2:end]
            j = end + 2
            if kind == ":":
                cls = _CLASSES.get(name)
                if cls is None:
                    return "(?!)", j  # glibc: an unknown class name never matches
                exact.append(cls)
            else:  # [=c=] and [.c.]: the single character itself
                exact.append(re.escape(name))
            continue
        if c == "\\" and j + 1 < n:
            j += 1
            c = pat[j]
        j += 1
        lo = c
        if j + 1 < n and pat[j] == "-" and pat[j + 1] != "]":
            hi = pat[j + 1]
            j += 2
            if hi == "\\" and j < n:
                hi = pat[j]
                j += 1
            if ord(lo) <= ord(hi):
                parts.append(f"{re.escape(lo)}-{re.escape(hi)}")
            continue
        parts.append(re.escape(lo))
    alts = ([f"[{''.join(parts)}]"] if parts else []) + \
        ([f"(?-i:[{''.join(exact)}])"] if exact else [])
    if not alts:
        return ("[^\\s\\S]" if not negate else "[\\s\\S]"), j
    member = alts[0] if len(alts) == 1 else f"(?:{'|'.join(alts)})"
    if not negate:
        return member, j
    return f"(?!{member})[\\s\\S]", j


def fnmatch_regex(pattern: str, casefold: bool = False) -> "re.Pattern[str]":
    """``pattern`` with fnmatch(3) semantics (flags 0, or FNM_CASEFOLD) as a compiled regex
    that must match the whole value."""
    out: list[str] = []
    i, n = 0, len(pattern)
    never = False
    while i < n:
        c = pattern[i]
        if c == "*":
            while i < n and pattern[i] == "*":
                i += 1
            out.append("[\\s\\S]*")
            continue
        if c == "?":
            out.append("[\\s\\S]")
        elif c == "[":
            got = _bracket(pattern, i)
            if got is not None:
                out.append(got[0])
                i = got[1]
                continue
            out.append(re.escape(c))
        elif c == "\\":
            if i + 1 >= n:
                never = True  # glibc: a trailing backslash never matches
                break
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    if never:
        return re.compile("(?!)")
    return re.compile("".join(out) + r"\Z", re.IGNORECASE if casefold else 0)


def glob_matcher(pattern: str, casefold: bool = False) -> Callable[[str], bool]:
    """A test ``value matches pattern`` with fnmatch(3) semantics."""
    rx = fnmatch_regex(pattern, casefold)
    match = rx.match
    return lambda v: match(v) is not None


_GLOB_CHARS = frozenset("?*[")


def _components(path: str) -> list[str]:
    return [c for c in path.split("/") if c]


def path_prefix_matcher(paths: list[str]) -> Callable[[str], bool]:
    """Falco's ``pmatch``: is one of ``paths`` a component-wise prefix of the value? Plain
    search paths cost one set lookup per value component; glob components one fnmatch each."""
    plain: set[tuple[str, ...]] = set()
    globbed: list[tuple[Callable[[str], bool], ...]] = []
    for p in paths:
        comps = _components(p)
        if any(_GLOB_CHARS.intersection(c) for c in comps):
            globbed.append(tuple((glob_matcher(c) if _GLOB_CHARS.intersection(c)
                                  else c.__eq__) for c in comps))
        else:
            plain.add(tuple(comps))
    root = () in plain  # "/" is a prefix of every path
    depths = sorted({len(p) for p in plain})

    def pmatch(v: str) -> bool:
        if root:
            return True
        comps = _components(v)
        for d in depths:
            if d > len(comps):
                break
            if tuple(comps[:d]) in plain:
                return True
        for g in globbed:
            if len(g) <= len(comps) and all(m(c) for m, c in zip(g, comps)):
                return True
        return False
    return pmatch
