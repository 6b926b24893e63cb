"""Network peers: which pod, workload or Service is at the other end of a record's connection.

Per record, but only records that carry ``network.peer.address`` (connect/accept/DNS events and
connection spans); everything else costs one scan of its attribute keys (~50 ns per attribute).
Lookups are memoised per batch, so a batch full of connections to one Service does one cache
lookup. Addresses that are not the cluster's (the internet, the node itself) find nothing and
are counted as misses; nothing is written for them.
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional

from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from otelguard import semconv
from otelguard.processors.k8s.cache import Attrs
from otelguard.processors.otlp import KeyValues, set_attrs

_PEER = semconv.NETWORK_PEER_ADDRESS


def peer_address(kvs: Iterable[KeyValue]) -> Optional[str]:
    for kv in kvs:
        if kv.key == _PEER:
            return kv.value.string_value or None
    return None


class PeerResolver:
    """Adds ``otelguard.peer.k8s.*`` to the records of one batch (one instance per batch)."""

    __slots__ = ("_lookup", "_memo", "hits", "misses")

    def __init__(self, lookup: Callable[[str], Optional[Attrs]]) -> None:
        self._lookup = lookup
        self._memo: dict[str, Optional[Attrs]] = {}
        self.hits = 0
        self.misses = 0

    def enrich(self, kvs: KeyValues) -> None:
        ip = peer_address(kvs)
        if ip is None:
            return
        if ip in self._memo:
            attrs = self._memo[ip]
        else:
            attrs = self._memo[ip] = self._lookup(ip)
        if attrs is None:
            self.misses += 1
            return
        self.hits += 1
        set_attrs(kvs, attrs)
