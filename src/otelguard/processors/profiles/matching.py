"""Profile entries as patterns: sibling collapse while learning, matching while enforcing, and
the nearest allowed entries a deviation is reported with.

Collapse (docs/profiles.md#globs): ``glob_siblings`` paths in one directory become ``DIR/*``,
names under one parent domain (3 labels or more) ``*.PARENT``, unresolved peer addresses in one
/24 (IPv6: /64) on one port ``A.B.C.0/24 PORT/PROTO``. Entries written by hand may use
``fnmatch`` patterns (``*``, ``?``, ``[...]``; ``*`` also crosses ``/``), CIDRs and ``*`` ports.
Matching is a set lookup, then the profile's patterns of that kind in order (few per profile).
"""

from __future__ import annotations

import ipaddress
from fnmatch import fnmatchcase
from typing import Any, Optional

from otelguard.processors.profiles.observe import DNS, EGRESS, FILE_READ, FILE_WRITE, PROCESS

_GLOB_CHARS = ("*", "?", "[")
_MEMO = 4096  # values remembered per Allowed with their pattern match


def is_pattern(value: str) -> bool:
    return any(c in value for c in _GLOB_CHARS)


def group_of(kind: str, value: str) -> Optional[str]:
    """The collapsed entry ``value`` falls under once its siblings multiply, else None."""
    if kind in (FILE_WRITE, FILE_READ):
        parent = value.rpartition("/")[0]
        return f"{parent}/*" if parent else None
    if kind == DNS:
        labels = value.split(".")
        return "*." + ".".join(labels[1:]) if len(labels) >= 3 else None
    if kind == EGRESS:
        peer, _, port = value.partition(" ")
        try:
            ip = ipaddress.ip_address(peer)
        except ValueError:
            return None
        net = ipaddress.ip_network(f"{ip}/{24 if ip.version == 4 else 64}", strict=False)
        return f"{net} {port}"
    return None


def _split_egress(value: str) -> tuple[str, str]:
    peer, _, port = value.partition(" ")
    return peer, port


class Allowed:
    """The allowed entries of one kind of one profile, compiled for matching."""

    __slots__ = ("kind", "values", "exact", "patterns", "networks", "_memo")

    def __init__(self, kind: str, values: list[str]) -> None:
        self.kind = kind
        self.values = sorted(set(values))
        self.exact = frozenset(v for v in self.values if not is_pattern(v))
        self.patterns = [v for v in self.values if is_pattern(v)]
        self.networks: list[tuple[Any, str]] = []
        self._memo: dict[str, bool] = {}
        if kind == EGRESS:
            for v in self.values:
                peer, port = _split_egress(v)
                try:
                    self.networks.append((ipaddress.ip_network(peer, strict=False), port))
                except ValueError:
                    continue

    def matches(self, value: str) -> bool:
        """A set lookup; else the patterns, their answer remembered per value (bounded)."""
        if value in self.exact:
            return True
        hit = self._memo.get(value)
        if hit is None:
            hit = self._match(value)
            if len(self._memo) >= _MEMO:
                self._memo.clear()
            self._memo[value] = hit
        return hit

    def _match(self, value: str) -> bool:
        if self.kind == EGRESS:
            return self._egress(value)
        if self.kind == PROCESS:
            parts = value.split("|", 2)
            for pattern in self.patterns:
                want = pattern.split("|", 2)
                if len(want) == 3 and len(parts) == 3 and all(
                        fnmatchcase(p, w) for p, w in zip(parts, want)):
                    return True
            return False
        return any(fnmatchcase(value, p) for p in self.patterns)

    def _egress(self, value: str) -> bool:
        peer, port = _split_egress(value)
        for pattern in self.patterns:
            want_peer, want_port = _split_egress(pattern)
            if fnmatchcase(peer, want_peer) and fnmatchcase(port, want_port):
                return True
        if not self.networks:
            return False
        try:
            ip = ipaddress.ip_address(peer)
        except ValueError:
            return False
        proto = port.partition("/")[2]
        for net, want_port in self.networks:
            if ip.version == net.version and ip in net and (
                    want_port == port or fnmatchcase(port, want_port)
                    or want_port == f"*/{proto}"):
                return True
        return False

    def nearest(self, value: str, n: int = 3) -> list[str]:
        """Up to ``n`` allowed entries sharing the longest prefix with ``value`` (cheap: no
        edit distance, so a flood of deviations stays linear in the profile's size)."""
        def shared(entry: str) -> int:
            k = 0
            for a, b in zip(entry, value):
                if a != b:
                    break
                k += 1
            return k
        return sorted(self.values, key=lambda e: (-shared(e), e))[:n]
