"""Agent-shaped OTLP records for the profiles tests: one Resource per pod, event records with
the attributes the sensor sets (docs/architecture.md#record-attributes), built from semconv."""

from __future__ import annotations

import itertools
from typing import Optional

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from otelguard import semconv as S
from otelguard.otlp.messages import PyValue, attrs_dict, iter_log_records, set_attrs
from otelguard.processors.profiles import ProfilesStage
from otelguard.processors.stage import Stage
from tests.support.fake_time import FakeTime

T0 = 1_763_900_000.0  # wall-clock seconds the tests' FakeTime starts at
_uids = itertools.count(1)
Event = tuple[str, dict[str, PyValue]]


def pod(uid: str, deployment: str = "cart", ns: str = "shop",
        container: str = "web") -> dict[str, PyValue]:
    return {S.CONTAINER_ID: uid * 8, S.K8S_POD_UID: f"pod-{uid}", S.K8S_NAMESPACE_NAME: ns,
            S.K8S_DEPLOYMENT_NAME: deployment, S.K8S_REPLICASET_NAME: f"{deployment}-6d4b",
            S.K8S_POD_NAME: f"{deployment}-6d4b-{uid}", S.K8S_CONTAINER_NAME: container,
            S.HOST_NAME: "node-1", S.STREAM: S.STREAM_EVENT}


def execve(exe: str, parent: str, *args: str, pid: int = 100,
           **flags: bool) -> Event:
    attrs: dict[str, PyValue] = {
        S.PROCESS_EXECUTABLE_PATH: exe, S.PROCESS_EXECUTABLE_NAME: exe.rpartition("/")[2],
        S.PROCESS_PARENT_EXECUTABLE_PATH: parent, S.PROCESS_COMMAND_ARGS: list(args) or [exe],
        S.PROCESS_COMMAND_LINE: " ".join(args), S.PROCESS_PID: pid, S.PROCESS_PARENT_PID: 1,
        S.SYSCALL_RET: 0,
    }
    for name, value in flags.items():
        attrs[{"upper": S.PROCESS_EXE_UPPER_LAYER, "memfd": S.PROCESS_EXE_FROM_MEMFD}[name]] = value
    return S.EV_PROCESS_EXEC, attrs


def _proc(pid: int, exe: str = "/usr/bin/python3") -> dict[str, PyValue]:
    return {S.PROCESS_PID: pid, S.PROCESS_PARENT_PID: 1, S.PROCESS_EXECUTABLE_PATH: exe,
            S.SYSCALL_RET: 3}


def open_(path: str, flags: str = "O_WRONLY|O_CREAT|O_APPEND", pid: int = 100) -> Event:
    return S.EV_FILE_OPEN, {**_proc(pid), S.FILE_PATH: path, S.FILE_OPEN_FLAGS: flags}


def connect(address: str, port: int, proto: str = "tcp", service: Optional[str] = None,
            pid: int = 100) -> Event:
    attrs: dict[str, PyValue] = {**_proc(pid), S.NETWORK_PEER_ADDRESS: address,
                                 S.NETWORK_PEER_PORT: port, S.NETWORK_TRANSPORT: proto,
                                 S.SYSCALL_RET: 0}
    if service is not None:
        attrs.update({S.PEER_K8S_SERVICE_NAME: service, S.PEER_K8S_NAMESPACE_NAME: "shop"})
    return S.EV_NETWORK_CONNECT, attrs


def dns(name: str, pid: int = 100) -> Event:
    return S.EV_DNS_QUERY, {**_proc(pid), S.DNS_QUESTION_NAME: name,
                            S.NETWORK_PEER_ADDRESS: "10.96.0.10", S.NETWORK_PEER_PORT: 53}


def listen(port: int, pid: int = 100) -> Event:
    return S.EV_NETWORK_LISTEN, {**_proc(pid), S.NETWORK_LOCAL_PORT: port, S.SYSCALL_RET: 0}


def capability(name: str, pid: int = 100) -> Event:
    return S.EV_PRIV_CAPABLE, {**_proc(pid), S.CAPABILITY: name, S.SYSCALL_RET: 0}


def fork(pid: int = 100) -> Event:
    return S.EV_PROCESS_FORK, _proc(pid)


def batch(resource: dict[str, PyValue], *events: Event) -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    set_attrs(rl.resource.attributes, resource)
    sl = rl.scope_logs.add()
    sl.scope.name = S.SCOPE_AGENT
    for name, attrs in events:
        rec = sl.log_records.add()
        rec.event_name = name
        rec.time_unix_nano = int(T0 * 1e9)
        rec.severity_number = 9  # type: ignore[assignment]  # protobuf enum field takes an int
        set_attrs(rec.attributes, {**attrs, S.LOG_RECORD_UID: f"uid-{next(_uids)}"})
    return req


def rule_detection(req: ExportLogsServiceRequest, rule: str, severity: int = 13) -> None:
    """A falco_rules-shaped detection of the batch's first record, appended as that stage does
    (its own Resource, a copy of the trigger's, marked otelguard.stream=detection)."""
    trigger_rl = req.resource_logs[0]
    trigger = trigger_rl.scope_logs[0].log_records[0]
    rl = req.resource_logs.add()
    rl.resource.CopyFrom(trigger_rl.resource)
    set_attrs(rl.resource.attributes, {S.STREAM: S.STREAM_DETECTION}, overwrite=True)
    rec = rl.scope_logs.add().log_records.add()
    rec.event_name = S.EV_DETECTION
    rec.severity_number = severity  # type: ignore[assignment]  # as above
    t = attrs_dict(trigger.attributes)
    set_attrs(rec.attributes, {S.SECURITY_RULE_NAME: rule, S.SECURITY_RULE_RULESET_NAME:
                               "falco_rules", S.TRIGGER_RECORD_UID: t[S.LOG_RECORD_UID],
                               S.PROCESS_PID: t[S.PROCESS_PID]})


def detections(req: ExportLogsServiceRequest) -> list[tuple[dict[str, PyValue], LogRecord]]:
    """(attributes, record) of every detection the profiles stage wrote into ``req``."""
    return [(attrs_dict(rec.attributes), rec) for _, _, rec in iter_log_records(req)
            if rec.event_name == S.EV_DETECTION
            and attrs_dict(rec.attributes).get(S.SECURITY_RULE_RULESET_NAME)
            == "otelguard_profiles"]


def benign_traffic(stage: Stage, *extra: Event) -> None:
    """One time bucket of the benign workload k8s/shop/Deployment/cart/web: three pods, each
    resolving its database, listening on 8080 and writing a file of its own."""
    for uid in ("a", "b", "c"):
        stage.process(batch(pod(uid), dns("db.shop.svc.cluster.local"), listen(8080),
                            open_(f"/tmp/up-{uid}"), *extra))


def learn_to_the_end(stage: ProfilesStage, clock: FakeTime, *extra: Event) -> None:
    """Two buckets of :func:`benign_traffic` (the stage configured with learn_seconds=800,
    bucket_seconds=100), then past the window and one sync: the profile is learned."""
    for _ in range(2):
        benign_traffic(stage, *extra)
        clock.now += 100
    clock.now = T0 + 801
    stage.sync()
