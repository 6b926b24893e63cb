"""Run a real attack on the real kernel and pass its events through the product's detection path.

The path is the one ``otelguard run`` takes, in process: the session :class:`Sensor` (real
tracepoints) -> :meth:`OtlpBuilder.logs` (the agent's OTLP mapping, trace/span ids from the span
tracker) -> the ``falco_rules`` stage built by its registered factory with the default config
(Falco's stable rules + otelguard's own) -> detection LogRecords appended to the batch.

An attack runs in a fresh kubepods-shaped cgroup (a "container", see tests/ebpf/containers.py)
and is over when the exit event of its top process arrived; a ``host=True`` run uses a cgroup
without container identity and keeps only the events of the started process and its
descendants.
Every wait is bounded.

``Attack.detection(rule)`` checks the invariants every detection must keep
(docs/architecture.md#detection-records):
severity from the rule priority, the trigger's trace/span ids, ``otelguard.trigger.record_uid``
naming a raw record of the same batch, and the evidence attributes copied unchanged from it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from otelguard import semconv as S
from otelguard.ebpf.events import Event
from otelguard.ebpf.sensor import Sensor
from otelguard.exporter.builder import OtlpBuilder
from otelguard.processors.detection.processor import Config, FalcoRulesProcessor, create
from otelguard.otlp.messages import PyValue, attrs_dict, body_text
from otelguard.processors.stage import Stage
from tests.ebpf.capture import collect, exited, flush, in_container
from tests.ebpf.containers import Container, cgroup_dir, container

SRC = str(Path(__file__).resolve().parents[2] / "src")
PYTHON = os.path.realpath(sys.executable)  # /usr/bin/python3.X: what /proc/<pid>/exe names
PYTHON_NAME = os.path.basename(PYTHON)

# Falco priority -> OTel severity number (docs/architecture.md#detection-records)
SEVERITY = {"EMERGENCY": 24, "ALERT": 23, "CRITICAL": 21, "ERROR": 17, "WARNING": 13,
            "NOTICE": 10, "INFORMATIONAL": 9, "INFO": 9, "DEBUG": 5}


def detection_stage() -> FalcoRulesProcessor:
    """The stage exactly as the pipeline registry creates it with an empty config."""
    return create(Config())


@dataclass
class Detection:
    """One detection record and the raw record that triggered it."""

    record: LogRecord
    attrs: dict[str, Any]  # attribute values as Python values (str, int, bool, list)
    resource: dict[str, Any]
    trigger: LogRecord
    trigger_attrs: dict[str, Any]

    @property
    def body(self) -> str:
        return body_text(self.record) or ""


@dataclass
class Attack:
    """What one run produced: the sensor's events, the OTLP batch after detection, and the
    detections grouped by rule name."""

    events: list[Event]
    batch: ExportLogsServiceRequest
    detections: list[Detection]
    pid: int
    returncode: int
    stdout: bytes
    stderr: bytes
    container: Optional[Container] = None
    raw: dict[str, tuple[LogRecord, dict[str, PyValue]]] = field(default_factory=dict)
    losses: int = 0  # records the sensor counted as lost (machine-wide) during this run

    def rules(self) -> set[str]:
        return {str(d.attrs[S.SECURITY_RULE_NAME]) for d in self.detections}

    def fired(self, rule: str) -> list[Detection]:
        return [d for d in self.detections if d.attrs.get(S.SECURITY_RULE_NAME) == rule]

    def records(self, event_name: str) -> list[dict[str, Any]]:
        """Attributes of the raw records named ``event_name`` (controls assert these exist, so
        "did not fire" never means "saw nothing")."""
        return [a for rec, a in self.raw.values() if rec.event_name == event_name]

    def detection(self, rule: str, priority: str, trigger_event: str,
                  body: Sequence[str] = (), evidence: Optional[dict[str, PyValue]] = None,
                  ) -> Detection:
        """The first detection of ``rule`` triggered by a ``trigger_event`` record, after
        asserting the invariants (see the module docstring) and the expected body fragments and
        evidence attributes on it."""
        hits = [d for d in self.fired(rule) if d.trigger.event_name == trigger_event]
        assert len(hits) >= 1, (
            f"{rule!r} did not fire (sensor losses during the run: {self.losses}); fired: "
            f"{sorted(self.rules())}; events: "
            + "; ".join(e.body for e in self.events)[:3000])
        d = hits[0]
        rec, a = d.record, d.attrs
        assert rec.event_name == S.EV_DETECTION
        assert rec.severity_text == priority, (rec.severity_text, priority)
        assert rec.severity_number == SEVERITY[priority]
        assert a[S.SECURITY_RULE_PRIORITY] == priority
        tags = a.get(S.SECURITY_RULE_TAGS, [])
        assert a[S.SECURITY_RULE_RULESET_NAME] == (
            "otelguard_rules" if "otelguard" in tags else "falco-incubating_rules"
            if "maturity_incubating" in tags else "falco-sandbox_rules"
            if "maturity_sandbox" in tags else "falco_rules")
        assert uuid.UUID(str(a[S.SECURITY_RULE_UUID])) and a[S.SECURITY_RULE_DESCRIPTION]
        assert a[S.LOG_RECORD_UID] != d.trigger_attrs[S.LOG_RECORD_UID]
        assert d.resource.get(S.STREAM) == S.STREAM_DETECTION
        if self.container is not None:
            assert d.resource.get(S.CONTAINER_ID) == self.container.container_id
            assert d.resource.get(S.K8S_POD_UID) == self.container.pod_uid
        assert d.trigger.event_name == trigger_event, (d.trigger.event_name, trigger_event)
        assert a[S.TRIGGER_EVENT_NAME] == trigger_event
        assert a[S.TRIGGER_RECORD_UID] == d.trigger_attrs[S.LOG_RECORD_UID]
        assert len(rec.trace_id) == 16 and len(rec.span_id) == 8
        assert rec.trace_id == d.trigger.trace_id and rec.span_id == d.trigger.span_id
        assert rec.time_unix_nano == d.trigger.time_unix_nano
        copied = {k: v for k, v in a.items() if k in d.trigger_attrs and
                  not k.startswith(("security_rule.", "otelguard.security_rule.",
                                    "otelguard.threat.", "otelguard.trigger."))
                  and k != S.LOG_RECORD_UID}
        assert copied, "no evidence attribute was copied from the trigger"
        for k, v in copied.items():
            assert d.trigger_attrs[k] == v, (k, v, d.trigger_attrs[k])
        for fragment in body:
            assert fragment in d.body, (fragment, d.body)
        for k, v in (evidence or {}).items():
            assert a.get(k) == v, (k, a.get(k), v)
        return d


def evaluate(events: Sequence[Event], stage: FalcoRulesProcessor,
             before: Sequence[Stage] = ()) -> tuple[ExportLogsServiceRequest, list[Detection],
                                                    dict[str, tuple[LogRecord,
                                                                    dict[str, PyValue]]]]:
    """Events -> OTLP (agent mapping) -> ``before`` stages (e.g. k8s_attributes) -> detection
    stage; returns the batch, the detections and the raw records by ``log.record.uid``."""
    batch = OtlpBuilder().logs(events)
    for earlier in before:
        out = earlier.process(batch)
        assert isinstance(out, ExportLogsServiceRequest)
        batch = out
    stage.process(batch)
    raw: dict[str, tuple[LogRecord, dict[str, PyValue]]] = {}
    found: list[tuple[LogRecord, dict[str, PyValue], dict[str, PyValue]]] = []
    for rl in batch.resource_logs:
        res = attrs_dict(rl.resource.attributes)
        for sl in rl.scope_logs:
            for rec in sl.log_records:
                a = attrs_dict(rec.attributes)
                if rec.event_name == S.EV_DETECTION:
                    found.append((rec, a, res))
                else:
                    raw[str(a[S.LOG_RECORD_UID])] = (rec, a)
    detections = []
    for rec, a, res in found:
        uid = str(a.get(S.TRIGGER_RECORD_UID))
        assert uid in raw, f"detection {a.get(S.SECURITY_RULE_NAME)!r} names no raw record"
        trig, trig_attrs = raw[uid]
        detections.append(Detection(rec, a, res, trig, trig_attrs))
    return batch, detections, raw


def _descendants(root: int) -> Any:
    """Event filter for host runs: ``root`` and every process forked below it (fork events
    arrive before the child's own events, so the set grows in time)."""
    pids = {root}

    def match(e: Event) -> bool:
        if e.name == S.EV_PROCESS_FORK and e.attrs.get(S.PROCESS_PARENT_PID) in pids:
            pids.add(e.pid)
        return e.pid in pids
    return match


def sensor_losses(sensor: Sensor) -> int:
    """Records the sensor lost so far (kernel ring full + user queue full), all counted."""
    st = sensor.stats()
    return int(st["kernel_drops"] or 0) + int(st["queue_drops"] or 0)


def run_attack(sensor: Sensor, stage: FalcoRulesProcessor, argv: Sequence[str], *,
               timeout_s: float = 20.0, host: bool = False,
               container_kwargs: Optional[dict[str, Any]] = None,
               env: Optional[dict[str, str]] = None, attempts: int = 4,
               before: Sequence[Stage] = (), **popen: Any) -> Attack:
    """Run ``argv`` (in a fresh container unless ``host``), then detect on what it caused.

    The sensor sees the whole machine, and other work on it (builds, benchmarks) can fill the
    ring buffer; lost records are counted, never silent. An attempt during which the sensor
    counted a loss may be missing records of the attack, so it is repeated (at most
    ``attempts`` times; the attack must therefore be repeatable: set its own files up); the
    last attempt is returned with its loss count in ``Attack.losses``."""
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    popen["env"] = {**os.environ, "PYTHONPATH": SRC, **(env or {})}
    for attempt in range(attempts):
        flush(sensor)
        lost_before = sensor_losses(sensor)
        attack = _run_once(sensor, stage, argv, timeout_s, host, container_kwargs, popen, before)
        attack.losses = sensor_losses(sensor) - lost_before
        if attack.losses == 0:
            break
        time.sleep(0.5 * (attempt + 1))
    return attack


def _run_once(sensor: Sensor, stage: FalcoRulesProcessor, argv: Sequence[str], timeout_s: float,
              host: bool, container_kwargs: Optional[dict[str, Any]],
              popen: dict[str, Any], before: Sequence[Stage]) -> Attack:
    if host:
        # the test sensor observes /kubepods* only (tests/ebpf/conftest.py): a cgroup there
        # that no runtime made has no container identity, which is what rules call "host"
        with cgroup_dir(f"/kubepods.slice/og-attack-host-{secrets.token_hex(6)}") as cg:
            procs = str(cg / "cgroup.procs")
            with subprocess.Popen(list(argv), preexec_fn=lambda: _enter(procs), **popen) as p:
                out, err = _communicate(p, timeout_s)
            events = collect(sensor, _descendants(p.pid), exited(p.pid), timeout_s)
        c = None
    else:
        with container(**(container_kwargs or {})) as c:
            with c.popen(argv, **popen) as p:
                out, err = _communicate(p, timeout_s)
            events = collect(sensor, in_container(c.container_id), exited(p.pid), timeout_s)
    batch, detections, raw = evaluate(events, stage, before)
    return Attack(events, batch, detections, p.pid, p.returncode, out, err, c, raw)


def python_attack(sensor: Sensor, stage: FalcoRulesProcessor, code: str, *,
                  exe: Optional[str] = None, **kwargs: Any) -> Attack:
    """``run_attack`` of ``<exe or python> -c code``; the workload must succeed."""
    attack = run_attack(sensor, stage, [exe or PYTHON, "-c", code], **kwargs)
    assert attack.returncode == 0, attack.stderr.decode()
    return attack


def _enter(cgroup_procs: str) -> None:
    with open(cgroup_procs, "w") as f:
        f.write(str(os.getpid()))


def _communicate(p: subprocess.Popen[bytes], timeout_s: float) -> tuple[bytes, bytes]:
    try:
        out, err = p.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise
    return out or b"", err or b""


def same_fs_dir(near: str) -> Iterator[Path]:
    """A temporary directory on the filesystem of ``near`` (hard links need one filesystem)."""
    d = Path(tempfile.mkdtemp(prefix="og-attack-", dir=_writable_dir_on_fs_of(near)))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _writable_dir_on_fs_of(path: str) -> str:
    dev = os.stat(path).st_dev
    for candidate in ("/var/tmp", "/usr/local/share", "/opt", "/root", "/"):
        try:
            if os.stat(candidate).st_dev == dev and os.access(candidate, os.W_OK):
                return candidate
        except OSError:
            continue
    raise RuntimeError(f"no writable directory on the filesystem of {path}")


def named_binary(directory: Path, name: str, of: str = PYTHON) -> str:
    """``directory/name``: a hard link to ``of`` (a copy when linking is impossible). The
    kernel, ``/proc/<pid>/exe`` and so the agent name the process ``name``, as when an attacker
    drops or renames a tool; a symlink would not do (exe resolves through it)."""
    target = directory / name
    try:
        os.link(of, target)
    except OSError:
        shutil.copy2(of, target)
    return str(target)
