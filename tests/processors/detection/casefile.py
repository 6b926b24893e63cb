"""Hand-built OTLP records for rule tests, from compact YAML case specs.

A record spec is ``{event: <event_name>, attrs: {...}, resource: {...}, time_ns: N}``; the
default resource is a Kubernetes container (``container.id`` set), ``resource: host`` makes a
host process. ``near_miss`` specs are merged over the matching spec (``null`` deletes a key).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Optional

import yaml
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from otelguard import semconv as S
from otelguard.otlp.messages import set_attrs

CASES = Path(__file__).parent / "cases"
CONTAINER_RESOURCE: dict[str, Any] = {
    S.CONTAINER_ID: "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa99887766554433221100",
    S.K8S_POD_UID: "0b7a6c1e-1f2d-4c3b-9a8e-7d6c5b4a3f21",
    S.K8S_NAMESPACE_NAME: "shop",
    S.K8S_POD_NAME: "web-7c9d8f-abcde",
    S.K8S_DEPLOYMENT_NAME: "web",
    S.CONTAINER_IMAGE_NAME: "docker.io/library/nginx:1.27",
    S.HOST_NAME: "node-1",
}
HOST_RESOURCE: dict[str, Any] = {S.HOST_NAME: "node-1", S.HOST_PROCESS: True}
BASE_TIME = 1_760_000_000_000_000_000


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def resource_of(spec: dict[str, Any]) -> dict[str, Any]:
    res = spec.get("resource", "container")
    if res == "host":
        return dict(HOST_RESOURCE)
    if res == "container":
        return dict(CONTAINER_RESOURCE)
    return merge(CONTAINER_RESOURCE, res)


def batch_of(*specs: dict[str, Any]) -> ExportLogsServiceRequest:
    """One ResourceLogs per spec (records of equal resources still get their own)."""
    req = ExportLogsServiceRequest()
    for i, spec in enumerate(specs):
        rl = req.resource_logs.add()
        set_attrs(rl.resource.attributes, {k: v for k, v in resource_of(spec).items()})
        sl = rl.scope_logs.add()
        sl.scope.name = S.SCOPE_AGENT
        rec = sl.log_records.add()
        fill(rec, spec, i)
    return req


def fill(rec: LogRecord, spec: dict[str, Any], i: int = 0) -> None:
    rec.event_name = spec["event"]
    rec.time_unix_nano = int(spec.get("time_ns", BASE_TIME + i))
    rec.severity_number = 9  # type: ignore[assignment]
    rec.trace_id = bytes.fromhex(spec.get("trace_id", "11" * 16))
    rec.span_id = bytes.fromhex(spec.get("span_id", "22" * 8))
    attrs = dict(spec.get("attrs", {}))
    attrs.setdefault(S.LOG_RECORD_UID, f"uid-{i}-{spec['event']}")
    set_attrs(rec.attributes, attrs)


def load_cases(name: str) -> list[dict[str, Any]]:
    data = yaml.safe_load((CASES / name).read_text())
    assert isinstance(data, list)
    return data


def near_miss_of(case: dict[str, Any]) -> Optional[dict[str, Any]]:
    nm = case.get("near_miss")
    return None if nm is None else merge(case["match"], nm)
