"""Network peers: which pod, workload or Service is at the other end of a record's connection.

Per record, but only records that carry ``network.peer.address`` (connect/accept/DNS events and
connection spans). Finding it means one scan of the record's attribute keys, ~0.2 µs per
attribute with upb -- more than the rest of the stage -- so records that cannot carry a peer are
skipped without a scan: the agent's own non-network events (by ``event_name``: everything under
``otelguard.`` except ``otelguard.network.*`` and ``otelguard.dns.*``) and INTERNAL spans (our
process spans). Records from other sources are always scanned. Lookups are memoised per batch, so a
batch full of connections to one Service does one cache lookup. Addresses that are not the
cluster's (the internet, the node itself) find nothing and are counted as misses; nothing is
written for them.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional

from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from otelguard import semconv
from otelguard.processors.k8s.pods import Attrs
from otelguard.processors.k8s.writer import AttributeWriter

_PEER = semconv.NETWORK_PEER_ADDRESS
_AGENT_PREFIX = semconv.EV_PROCESS_EXEC.split(".", 1)[0] + "."  # "otelguard."
_NETWORK_PREFIXES = tuple(
    name.rsplit(".", 1)[0] + "." for name in (semconv.EV_NETWORK_CONNECT, semconv.EV_DNS_QUERY)
)


def may_have_peer(event_name: str) -> bool:
    """False for the agent's events that never carry a network peer (no attribute scan needed)."""
    return not event_name.startswith(_AGENT_PREFIX) or event_name.startswith(_NETWORK_PREFIXES)


_PEER_KEYS = frozenset({
    semconv.PEER_K8S_POD_NAME, semconv.PEER_K8S_NAMESPACE_NAME, semconv.PEER_K8S_WORKLOAD_NAME,
    semconv.PEER_K8S_WORKLOAD_KIND, semconv.PEER_K8S_SERVICE_NAME,
})


def peer_address(kvs: Iterable[KeyValue]) -> Optional[str]:
    for kv in kvs:
        if kv.key == _PEER:
            return kv.value.string_value or None
    return None


class PeerResolver:
    """Adds ``otelguard.peer.k8s.*`` to the records of one batch (one instance per batch)."""

    __slots__ = ("_lookup", "_writer", "_memo", "hits", "misses")

    def __init__(self, lookup: Callable[[str], Optional[Attrs]], writer: AttributeWriter) -> None:
        self._lookup = lookup
        self._writer = writer
        self._memo: dict[str, Optional[Attrs]] = {}
        self.hits = 0
        self.misses = 0

    def enrich(self, msg: Any) -> None:
        """``msg`` is a LogRecord or Span; one scan of its keys finds the peer address and any
        peer keys already set (those are kept: never overwrite)."""
        ip = ""
        already: list[str] = []
        for kv in msg.attributes:
            key = kv.key
            if key == _PEER:
                ip = kv.value.string_value
            elif key in _PEER_KEYS:
                already.append(key)
        if not ip:
            return
        if ip in self._memo:
            attrs = self._memo[ip]
        else:
            attrs = self._memo[ip] = self._lookup(ip)
        if attrs is None:
            self.misses += 1
            return
        self.hits += 1
        if already:
            self._writer.write(msg, attrs)
        else:
            self._writer.append(msg, attrs)
