"""On receipt: which node sent each Resource, from its node-token MAC (transport/identity.py).

Runs on every request before the pipeline, so ``k8s_attributes`` can trust
``otelguard.sender.verified`` and ``otelguard.sender.node``: nothing a sender sets under those
keys survives this check. Per Resource: one scan of its attributes and, when it carries a stamp,
one HMAC-SHA256 (bench/sender_identity.py; docs/benchmarks.md); never per record.

- With ``service.identity.node_token_file``: every Resource gets ``otelguard.sender.verified``
  (true only for a valid MAC of a recent minute under the named node's token); the MAC and
  nonce are stripped (they never reach the backends, where someone could lift a stamp).
- Without it: nothing is checked; only a Resource that carries sender attributes is touched
  (marked ``verified=false``, MAC and nonce stripped), so a sender cannot claim to be verified.
- ``require: true``: unverified Resources are taken out of the request and counted
  (``otelguard_dropped_total{stage="receive",reason="unverified_sender"}``, and the caller's
  ``partial_success``); a request with no verified Resource is refused with UNAUTHENTICATED /
  401. Refusing per Resource, not per request, keeps one bad agent from costing the others
  their records when the gateway Collector batches several agents into one request.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otelguard import semconv
from otelguard.otlp.messages import count_item_records
from otelguard.processors.config import IdentitySection
from otelguard.processors.errors import RequestError
from otelguard.processors.stage import Batch
from otelguard.transport.identity import NodeTokens

REASON = "unverified_sender"
_STRIPPED = frozenset({semconv.SENDER_MAC, semconv.SENDER_NONCE, semconv.SENDER_VERIFIED})
_IDENTITY = (semconv.SENDER_NODE, semconv.SENDER_NONCE, semconv.SENDER_MAC,
             semconv.CONTAINER_ID, semconv.K8S_POD_UID, semconv.HOST_NAME)


@dataclass
class Checked:
    resources: int = 0
    verified: int = 0
    refused_resources: int = 0
    refused_records: int = 0


class SenderCheck:
    def __init__(self, cfg: IdentitySection, clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.tokens: Optional[NodeTokens] = (
            NodeTokens(cfg.node_token_file, cfg.max_age_seconds, clock)
            if cfg.node_token_file else None)

    def apply(self, batch: Batch) -> Checked:
        """Mark (and with ``require``, remove) every Resource of ``batch`` in place."""
        items = (batch.resource_logs if isinstance(batch, ExportLogsServiceRequest)
                 else batch.resource_spans)
        out = Checked(resources=len(items))
        refused: list[int] = []
        for i, item in enumerate(items):
            ok = self._check(item.resource.attributes)
            if ok:
                out.verified += 1
            elif self.cfg.require:
                refused.append(i)
                out.refused_records += count_item_records(item)
        for i in reversed(refused):
            del items[i]
        out.refused_resources = len(refused)
        return out

    def _check(self, attrs: Any) -> bool:
        values = dict.fromkeys(_IDENTITY, "")
        strip: list[int] = []
        for i, kv in enumerate(attrs):
            if kv.key in _STRIPPED:
                strip.append(i)
            if kv.key in values:
                values[kv.key] = kv.value.string_value
        if self.tokens is None and not strip:
            return False
        ok = self.tokens is not None and self.tokens.verify(
            values[semconv.SENDER_NODE], values[semconv.CONTAINER_ID],
            values[semconv.K8S_POD_UID], values[semconv.HOST_NAME],
            values[semconv.SENDER_NONCE], values[semconv.SENDER_MAC])
        if strip:  # the first stripped attribute becomes the mark, in place (no copy)
            for i in reversed(strip[1:]):
                del attrs[i]
            mark = attrs[strip[0]]
            mark.key = semconv.SENDER_VERIFIED
        else:
            mark = attrs.add(key=semconv.SENDER_VERIFIED)
        mark.value.bool_value = ok
        return ok


def unverified(checked: Checked) -> RequestError:
    return RequestError(grpc.StatusCode.UNAUTHENTICATED, 401, REASON,
                        f"{checked.refused_resources} Resource(s) without a valid sender MAC "
                        "(otelguard.sender.*) and service.identity.require is set")
