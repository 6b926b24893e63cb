"""Event -> OTLP logs/spans mapping: golden OTLP JSON, both encoders agree, grouping, ids.

Regenerate the goldens with ``OTELGUARD_REGEN_GOLDEN=1`` and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from otelguard.otlp import jsoncodec
from otelguard import semconv as sc
from otelguard.exporter.builder import OtlpBuilder
from otelguard.exporter.settings import node_identity
from otelguard.exporter.spans import SpanData, span_id_of, trace_id_of
from otelguard.otlp.messages import attrs_dict, get_attr
from tests.exporter.scenario import CID, NODE, OBSERVED, POD, T0, shell_session, sorted_attrs

GOLDEN = Path(__file__).parent / "golden"


def _builder() -> OtlpBuilder:
    return OtlpBuilder(NODE, clock=lambda: OBSERVED)


def _check_golden(name: str, obj: dict[str, object]) -> None:
    path = GOLDEN / name
    text = json.dumps(obj, indent=1, sort_keys=True) + "\n"
    if os.environ.get("OTELGUARD_REGEN_GOLDEN") == "1":
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with OTELGUARD_REGEN_GOLDEN=1 and review it"
    assert json.loads(path.read_text()) == json.loads(text), f"{name} differs from the golden file"


def test_logs_golden() -> None:
    _check_golden("shell_session.logs.json", jsoncodec.to_dict(_builder().logs(shell_session())))


def test_traces_golden() -> None:
    b = _builder()
    b.logs(shell_session())
    traces = b.shutdown_traces()
    assert traces is not None
    _check_golden("shell_session.traces.json", jsoncodec.to_dict(traces))


def test_wire_bytes_equal_field_by_field_message() -> None:
    events = shell_session()
    wire = sorted_attrs(_builder().logs(events))
    fields = sorted_attrs(_builder().logs_fields(shell_session()))
    assert wire == fields


def test_traces_wire_bytes_equal_field_by_field_message() -> None:
    b = _builder()
    b.logs(shell_session())
    b.spans.end_all(T0 + 10**9)
    finished = b.spans.take_finished()
    assert len(finished) >= 4 and len({sd.resource for sd in finished}) >= 2
    odd = SpanData(
        resource=finished[0].resource, trace_id=b"\x01" * 16, span_id=b"\x02" * 8,
        parent_span_id=b"\x03" * 8, name="connect 10.0.0.1:443", kind=3, start_ns=T0,
        end_ns=T0 + 5, links=[(b"\x04" * 16, b"\x05" * 8), (b"\x06" * 16, b"\x07" * 8)],
        status_code=2, status_message="connection reset",
        attrs={"otelguard.test.f": 1.5, "otelguard.test.b": False, "otelguard.test.neg": -7,
               "otelguard.test.big": 2**40, "otelguard.test.list": ["a", "b"],
               "otelguard.test.empty": [], sc.PROCESS_DURATION_NS: 123_456_789_012,
               sc.LOG_RECORD_UID: "x" * 300, "otelguard.test.long": "y" * 200})
    bare = SpanData(resource=("", ""), trace_id=b"\x08" * 16, span_id=b"\x09" * 8,
                    parent_span_id=b"", name="", kind=0, start_ns=T0, status_code=1)
    spans = [*finished, odd, bare, odd]  # odd twice: its pairs come from the cache
    wire = b.traces(spans)
    assert wire is not None and wire == b.traces_fields(spans)
    assert sum(len(rs.scope_spans[0].spans) for rs in wire.resource_spans) == len(spans)
    assert b.traces_bytes([]) == b"" and b.traces([]) is None


def test_one_resource_per_container_and_one_for_the_host() -> None:
    req = _builder().logs(shell_session())
    resources = [attrs_dict(rl.resource.attributes) for rl in req.resource_logs]
    assert len(resources) == 2
    ctr, host = resources
    assert ctr[sc.CONTAINER_ID] == CID and ctr[sc.K8S_POD_UID] == POD
    assert sc.HOST_PROCESS not in ctr
    assert host[sc.HOST_PROCESS] is True and sc.CONTAINER_ID not in host
    # a fixed service.name for the host (Loki indexes it); a container's comes from k8s
    assert host[sc.SERVICE_NAME] == "host" and sc.SERVICE_NAME not in ctr
    for res in resources:
        assert res[sc.K8S_NODE_NAME] == "node-a" and res[sc.HOST_ID] == NODE.host_id
        assert res[sc.OS_TYPE] == "linux" and res[sc.STREAM] == sc.STREAM_EVENT
    for rl in req.resource_logs:
        assert [(sl.scope.name, sl.scope.version) for sl in rl.scope_logs] == [(sc.SCOPE_AGENT, "0.1.0")]


def test_records_whose_cgroup_did_not_resolve_are_neither_a_container_nor_the_host() -> None:
    # the sensor marks them (context.py): a container shorter than the decode lag must not
    # read as the host, where `not container` would be true by default
    from otelguard.ebpf.events import UNRESOLVED_POD_UID
    from otelguard.processors.detection.fields.container import UNKNOWN_CONTAINER, _container_id

    events = shell_session()
    gone = events[0]
    gone.container_id, gone.pod_uid = "", UNRESOLVED_POD_UID
    req = _builder().logs(events)
    resources = [attrs_dict(rl.resource.attributes) for rl in req.resource_logs]
    assert len(resources) == 3  # the container, the unresolved one, the host
    unresolved = next(r for r in resources if sc.CONTAINER_UNRESOLVED in r)
    assert unresolved[sc.CONTAINER_UNRESOLVED] is True
    assert unresolved[sc.SERVICE_NAME] == sc.SERVICE_NAME_UNRESOLVED
    assert not {sc.HOST_PROCESS, sc.CONTAINER_ID, sc.K8S_POD_UID} & set(unresolved)
    assert UNRESOLVED_POD_UID not in str(req)  # the marker never leaves the agent

    class View:  # what the detection fields read: the Resource
        res = unresolved

    assert _container_id(View(), None) == UNKNOWN_CONTAINER[:12] != "host"  # type: ignore[arg-type]


def test_record_fields() -> None:
    req = _builder().logs(shell_session())
    recs = list(req.resource_logs[0].scope_logs[0].log_records)
    exec_rec = recs[1]
    assert exec_rec.event_name == sc.EV_PROCESS_EXEC
    assert exec_rec.time_unix_nano == T0 + 1000 and exec_rec.observed_time_unix_nano == OBSERVED
    assert exec_rec.severity_number == 9 and exec_rec.severity_text == "INFO"
    assert exec_rec.body.string_value == "exec /usr/bin/curl by uid 1000"
    assert get_attr(exec_rec.attributes, sc.PROCESS_ANCESTORS) == ["bash", "containerd-shim"]
    assert get_attr(exec_rec.attributes, sc.SYSCALL_NAME) == "execve"  # added from Event.syscall
    assert exec_rec.trace_id == trace_id_of(CID, 100, T0)
    assert exec_rec.span_id == span_id_of(CID, 101, T0 + 900, 1)
    # records of the same process share its span ids
    assert recs[2].span_id == recs[3].span_id == exec_rec.span_id
    # the close of a connection has no acting process: no ids
    host_recs = list(req.resource_logs[1].scope_logs[0].log_records)
    close = next(r for r in host_recs if r.event_name == sc.EV_NETWORK_CLOSE)
    assert close.trace_id == b"" and close.span_id == b""


def test_ids_are_deterministic_across_builders() -> None:
    a = _builder().logs(shell_session())
    b = _builder().logs(shell_session())
    ids = lambda req: [(r.trace_id, r.span_id) for rl in req.resource_logs  # noqa: E731
                       for sl in rl.scope_logs for r in sl.log_records]
    assert ids(a) == ids(b)
    assert len({t for t, _ in ids(a) if t}) == 4  # bash tree, sshd, cron, cron's job


def test_node_identity_from_env(tmp_path: Path) -> None:
    mid = tmp_path / "machine-id"
    mid.write_text("abc123\n")
    ident = node_identity({"OTELGUARD_NODE_NAME": "worker-7"}, str(mid))
    assert (ident.node_name, ident.host_id) == ("worker-7", "abc123")
    fallback = node_identity({}, str(tmp_path / "missing"))
    assert fallback.node_name == fallback.host_name and fallback.host_id == ""


@pytest.mark.parametrize("value", [1.5, True, -7, 2**40, ["a", "b"], [1, 2], "ünïcode"])
def test_wire_encodes_every_attribute_type(value: object) -> None:
    events = shell_session()[:1]
    events[0].attrs = {"otelguard.test.value": value}  # type: ignore[dict-item]
    msg = _builder().logs(events)
    rec = msg.resource_logs[0].scope_logs[0].log_records[0]
    assert get_attr(rec.attributes, "otelguard.test.value") == value


@pytest.mark.parametrize("key, value", [
    (sc.LOG_RECORD_UID, "a1b2c3-1f"), (sc.LOG_RECORD_UID, "x" * 300),
    (sc.PROCESS_DURATION_NS, 123_456_789_012), (sc.PROCESS_DURATION_NS, 0),
    (sc.PROCESS_COMMAND_ARGS, ["sh", "-c", "id"]), (sc.PROCESS_ANCESTOR_PIDS, [1, 2**40]),
    ("otelguard.test.unlisted_list", ["not", "in", "LIST_KEYS"]),
])
def test_wire_special_paths_unique_values_and_lists(key: str, value: object) -> None:
    """Unique-per-record keys bypass the cache, list values are encoded apart: same result."""
    events = shell_session()[:2]
    for e in events:
        e.attrs = {**e.attrs, key: value}
    wire = _builder().logs(events)
    fields = _builder().logs_fields(events)
    assert sorted_attrs(wire) == sorted_attrs(fields)
    rec = wire.resource_logs[0].scope_logs[0].log_records[1]
    assert get_attr(rec.attributes, key) == value
