"""Sender identity bound to the data: a per-node MAC over each Resource's identity attributes.

In pipeline (a) the processor's TCP peer is the gateway Collector, which passes Resource
attributes through unchanged, so the channel cannot say which node sent a record. Each agent
holds its own node token (a per-node secret) and stamps every Resource it exports with
``otelguard.sender.node`` (its node name), ``otelguard.sender.nonce`` (``<minute>.<counter>``:
the export's Unix minute and a per-agent request counter) and ``otelguard.sender.mac``: hex
HMAC-SHA256, keyed by the node token, over :func:`canonical` of the node name, ``container.id``,
``k8s.pod.uid``, ``host.name`` and the nonce. The processor looks the node's token up in its
node-token file (:class:`NodeTokens`) and checks the MAC and that the minute is recent
(docs/architecture.md#security). The same stamp works with or without a Collector between.

The MAC covers the Resource's identity, not its records: whoever holds a stamped Resource
could attach other records to it while its minute is accepted; the processor therefore strips
the MAC and nonce once checked, so they never reach Loki. The counter only makes each stamp
distinct; it is not checked for reuse (a Collector retry or a spool replay resends the same
stamp legitimately).

Cost: one HMAC per Resource per request on each side (~2.5 µs), never per record; the
receiver's whole check ~14 µs per Resource, +9-10% over parsing the request, and the agent's
build +2-6% (bench/sender_identity.py, docs/benchmarks.md).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Optional

from otelguard import semconv
from otelguard.config import Checks
from otelguard.transport.security import WatchedFiles, read_tokens

log = logging.getLogger("otelguard.identity")

_VERSION = b"otelguard-sender-v1"
NODE_PLACEHOLDER = "{node}"


@dataclass(frozen=True)
class SenderIdentity:
    """``exporter.identity``: the node token this agent signs its Resources with."""

    # The node's secret, first non-empty line. ``{node}`` in the path is replaced by the node
    # name, so a Secret with one key per node can be mounted whole on every node.
    node_token_file: Optional[str] = None

    def __post_init__(self) -> None:
        checks = Checks()
        if self.node_token_file is not None and not self.node_token_file.strip():
            checks.add("node_token_file", "must be a path (or null)")
        checks.done()

    def token_path(self, node: str) -> Optional[str]:
        if not self.node_token_file:
            return None
        return self.node_token_file.replace(NODE_PLACEHOLDER, node)


def _field(value: str) -> bytes:
    raw = value.encode("utf-8")
    return len(raw).to_bytes(4, "big") + raw


def canonical(node: str, container_id: str, pod_uid: str, host_name: str, nonce: str) -> bytes:
    """The signed bytes: a version tag and each field length-prefixed, in a fixed order, so no
    two different field sets encode alike (an empty and an absent attribute are the same)."""
    return _VERSION + b"".join(_field(v) for v in (node, container_id, pod_uid, host_name, nonce))


def mac(token: bytes, node: str, container_id: str, pod_uid: str, host_name: str,
        nonce: str) -> str:
    return hmac.new(token, canonical(node, container_id, pod_uid, host_name, nonce),
                    hashlib.sha256).hexdigest()


def nonce_minute(nonce: str) -> Optional[int]:
    minute, sep, counter = nonce.partition(".")
    if not sep or not minute.isdigit() or not counter.isdigit():
        return None
    return int(minute)


class ResourceSigner:
    """The agent's side: the three sender attributes for each Resource of one request.

    The token file is re-read when it changes (rotation); a token that cannot be read leaves
    Resources unsigned (the processor marks them unverified) and is logged once per change.
    """

    def __init__(self, node: str, token_path: str,
                 clock: Callable[[], float] = time.time) -> None:
        self.node = node
        self.path = token_path
        self._clock = clock
        self._watch = WatchedFiles([token_path])
        self._token: Optional[bytes] = None
        self._counter = 0
        self._lock = threading.Lock()

    def token(self) -> Optional[bytes]:
        if self._watch.changed():
            try:
                tokens = read_tokens(self.path)
            except (OSError, UnicodeDecodeError) as exc:
                log.warning("cannot read node token file %s: %s; Resources go out unsigned",
                            self.path, exc)
                self._token = None
            else:
                self._token = tokens[0].encode() if tokens else None
        return self._token

    def next_nonce(self) -> str:
        """One per request: the export's minute and this agent's request counter."""
        with self._lock:
            self._counter += 1
            return f"{int(self._clock() // 60)}.{self._counter}"

    def stamp(self, attrs: Mapping[str, object], nonce: str) -> list[tuple[str, str]]:
        """The sender attributes for a Resource with ``attrs`` (empty when no token)."""
        token = self.token()
        if token is None:
            return []
        return [(semconv.SENDER_NODE, self.node), (semconv.SENDER_NONCE, nonce),
                (semconv.SENDER_MAC, mac(token, self.node, _text(attrs, semconv.CONTAINER_ID),
                                         _text(attrs, semconv.K8S_POD_UID),
                                         _text(attrs, semconv.HOST_NAME), nonce))]


def _text(attrs: Mapping[str, object], key: str) -> str:
    value = attrs.get(key)
    return value if isinstance(value, str) else ""


def read_node_tokens(path: str) -> dict[str, bytes]:
    """``NODE TOKEN`` per line; or, for a directory (a Secret mounted whole), one file per node
    named by the node and holding its token (dot files, such as a Secret's ``..data``, are
    skipped). Several lines for one node are all accepted (rotation overlap)."""
    out: dict[str, list[bytes]] = {}
    if os.path.isdir(path):
        for name in sorted(os.listdir(path)):
            full = os.path.join(path, name)
            if name.startswith(".") or not os.path.isfile(full):
                continue
            out.setdefault(name, []).extend(t.encode() for t in read_tokens(full))
    else:
        for line in read_tokens(path):
            node, _, token = line.partition(" ")
            if token.strip():
                out.setdefault(node, []).append(token.strip().encode())
    return {node: b"\n".join(tokens) for node, tokens in out.items()}


class NodeTokens:
    """The processor's side: the node tokens, re-read when the file (or directory) changes, and
    the check of one Resource's stamp."""

    def __init__(self, path: str, max_age_seconds: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.max_age_minutes = max(1, int(max_age_seconds // 60))
        self._clock = clock
        self._watch = WatchedFiles([path])
        self._tokens: dict[str, tuple[bytes, ...]] = {}
        self._lock = threading.Lock()
        self._minute = 0
        self._minute_at = -1.0

    def tokens(self, node: str) -> tuple[bytes, ...]:
        if self._watch.changed():
            try:
                fresh = read_node_tokens(self.path)
            except (OSError, UnicodeDecodeError) as exc:
                log.warning("cannot read node token file %s: %s", self.path, exc)
                self._watch.forget()
            else:
                with self._lock:
                    self._tokens = {n: tuple(t.split(b"\n")) for n, t in fresh.items()}
        with self._lock:
            return self._tokens.get(node, ())

    def verify(self, node: str, container_id: str, pod_uid: str, host_name: str, nonce: str,
               given: str) -> bool:
        """Whether ``given`` is the MAC of these values under one of ``node``'s tokens and the
        nonce's minute is within ``max_age_seconds`` of now (either way: clock skew)."""
        minute = nonce_minute(nonce)
        if minute is None or not node or not given:
            return False
        if abs(int(self._clock() // 60) - minute) > self.max_age_minutes:
            return False
        ok = False
        for token in self.tokens(node):
            ok |= hmac.compare_digest(
                given.encode(), mac(token, node, container_id, pod_uid, host_name,
                                    nonce).encode())
        return ok
