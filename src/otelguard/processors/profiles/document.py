"""Profiles as code: one ``kind: WorkloadProfile`` YAML file per workload.

``spec`` is the allowed behaviour a reviewer reads and edits; its canonical JSON's SHA-256 is the
content hash an approval records (``status.approval.content_hash``), so an edit after approval is
visible (the stage reports it as tampering and stops enforcing until it is approved again).
``status`` is the learning evidence: the state, the window, per-entry sightings, instances and
buckets, quarantined entries with the reason, taints. Files are read with the one config loader
(unknown keys and bad values are errors with file:line) and written atomically (temp name,
fsync, rename, directory fsync), so a crash leaves the old or the new file, never a torn one.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from otelguard.config import files, from_mapping, load_file
from otelguard.processors.profiles.config import Config
from otelguard.processors.profiles.model import Entry, Profile
from otelguard.processors.profiles.observe import (
    CAPABILITY, DNS, EGRESS, FILE_READ, FILE_WRITE, KINDS, LISTEN, PROCESS, UNTRUSTED_EXEC,
)

API_VERSION: Literal["otelguard.dev/v1alpha1"] = "otelguard.dev/v1alpha1"
KIND: Literal["WorkloadProfile"] = "WorkloadProfile"
SUFFIX = ".yaml"
Kind = Literal["process", "untrusted_exec", "file_write", "file_read", "egress", "dns",
               "listen", "capability"]
State = Literal["learning", "learned", "tainted", "approved"]
# spec key -> observation kind
SPEC_KEYS = {"processes": PROCESS, "untrusted_execs": UNTRUSTED_EXEC, "file_writes": FILE_WRITE,
             "file_reads": FILE_READ, "egress": EGRESS, "dns": DNS, "listen": LISTEN,
             "capabilities": CAPABILITY}


@dataclass(frozen=True)
class ProcessEntry:
    exe: str  # executable path (fnmatch pattern allowed)
    parent: str = "*"  # parent executable path
    argv: str = "*"  # argv shape: flags kept, values as <num>, <path>, <arg>


@dataclass(frozen=True)
class Spec:
    """What the workload is allowed to do; entries may be fnmatch patterns, egress peers CIDRs."""

    processes: tuple[ProcessEntry, ...] = ()
    untrusted_execs: tuple[str, ...] = ()  # execs from the writable layer or memory
    file_writes: tuple[str, ...] = ()
    file_reads: tuple[str, ...] = ()  # sensitive files read
    egress: tuple[str, ...] = ()  # "PEER PORT/PROTO"
    dns: tuple[str, ...] = ()
    listen: tuple[str, ...] = ()  # "PORT/PROTO"
    capabilities: tuple[str, ...] = ()


@dataclass(frozen=True)
class Evidence:
    kind: Kind
    value: str
    observations: int = 0
    instances: tuple[str, ...] = ()
    buckets: tuple[int, ...] = ()
    first_seen: str = ""
    last_seen: str = ""
    risky: str = ""
    reason: str = ""  # quarantined: why it was not learned


@dataclass(frozen=True)
class Taint:
    rule: str
    at: str
    instance: str = ""


@dataclass(frozen=True)
class Approval:
    by: str
    at: str
    content_hash: str


@dataclass(frozen=True)
class Learning:
    started: str
    ends: str
    ended: str = ""
    observations: int = 0
    instances: tuple[str, ...] = ()


@dataclass(frozen=True)
class Status:
    state: State = "learning"
    learning: Optional[Learning] = None
    approval: Optional[Approval] = None
    tainted: tuple[Taint, ...] = ()
    partial: bool = False
    overflow: int = 0
    quarantine: tuple[Evidence, ...] = ()
    entries: tuple[Evidence, ...] = ()  # candidates while learning; the allowed ones after


@dataclass(frozen=True)
class Metadata:
    workload: str
    revision: int = 0


@dataclass(frozen=True)
class ProfileDocument:
    apiVersion: Literal["otelguard.dev/v1alpha1"]  # noqa: N815 - the file's key
    kind: Literal["WorkloadProfile"]
    metadata: Metadata
    spec: Spec = field(default_factory=Spec)
    status: Status = field(default_factory=Status)


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def _seconds(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() if text else 0.0


def spec_values(spec: Spec) -> dict[str, list[str]]:
    """The spec as the stage's kind -> values (a process entry is ``EXE|PARENT|ARGV``)."""
    out: dict[str, list[str]] = {k: [] for k in KINDS}
    out[PROCESS] = [f"{p.exe}|{p.parent}|{p.argv}" for p in spec.processes]
    for key, kind in SPEC_KEYS.items():
        if kind != PROCESS:
            out[kind] = list(getattr(spec, key))
    return out


def spec_of(values: dict[str, list[str]]) -> Spec:
    procs = []
    for v in sorted(values.get(PROCESS, [])):
        exe, parent, argv = (v.split("|", 2) + ["*", "*"])[:3]
        procs.append(ProcessEntry(exe, parent, argv))
    kwargs: dict[str, Any] = {key: tuple(sorted(values.get(kind, [])))
                              for key, kind in SPEC_KEYS.items() if kind != PROCESS}
    return Spec(processes=tuple(procs), **kwargs)


def content_hash(spec: Spec) -> str:
    """SHA-256 of the spec's canonical JSON (lists sorted: order is not content)."""
    canon = {k: sorted(json.dumps(x, sort_keys=True) for x in v) if isinstance(v, list) else v
             for k, v in asdict(spec).items()}
    return "sha256:" + hashlib.sha256(json.dumps(canon, sort_keys=True).encode()).hexdigest()


def _evidence(kind: str, value: str, e: Entry, reason: str = "") -> Evidence:
    return Evidence(kind, value, e.count, tuple(e.instances), tuple(sorted(e.buckets)),  # type: ignore[arg-type]  # kind is one of KINDS, the Literal's values
                    iso(e.first), iso(e.last), e.risky, reason)


def to_document(p: Profile) -> ProfileDocument:
    allowed = {(k, v) for k, vs in p.spec.items() for v in vs}
    entries = tuple(_evidence(k, v, e) for k, c in p.candidates.items()
                    for v, e in sorted(c.items())
                    if p.state == "learning" or (k, v) in allowed)
    spec = spec_of(p.spec)
    return ProfileDocument(API_VERSION, KIND, Metadata(p.workload, p.revision), spec, Status(
        state=p.state,  # type: ignore[arg-type]  # Profile.state is one of model.STATES
        learning=Learning(iso(p.started), iso(p.ends), iso(p.ended) if p.ended else "",
                          p.observations, tuple(p.instances)),
        approval=Approval(p.approval[0], iso(p.approval[1]), p.approval[2])
        if p.approval else None,
        tainted=tuple(Taint(r, iso(t), i) for r, t, i in p.taints),
        partial=p.partial, overflow=p.overflow,
        quarantine=tuple(_evidence(k, v, e, why) for k, v, e, why in p.quarantine),
        entries=entries))


def _entry(ev: Evidence) -> Entry:
    e = Entry(_seconds(ev.first_seen), ev.risky)
    e.count, e.last = ev.observations, _seconds(ev.last_seen)
    e.instances, e.buckets = list(ev.instances), list(ev.buckets)
    return e


def from_document(doc: ProfileDocument, config: Config) -> Profile:
    """The live profile a file stands for; an approved one is checked against its hash."""
    st = doc.status
    started = _seconds(st.learning.started) if st.learning else 0.0
    p = Profile(doc.metadata.workload, started, config)
    p.state, p.revision = st.state, doc.metadata.revision
    if st.learning:
        p.ends = _seconds(st.learning.ends)
        p.ended = _seconds(st.learning.ended) or None
        p.observations = st.learning.observations
        p.instances = list(st.learning.instances)
    for ev in st.entries:
        p.candidates[ev.kind][ev.value] = _entry(ev)
    p.quarantine = [(ev.kind, ev.value, _entry(ev), ev.reason) for ev in st.quarantine]
    p.taints = [(t.rule, _seconds(t.at), t.instance) for t in st.tainted]
    p.partial, p.overflow = st.partial, st.overflow
    p.partial_reported = st.partial
    p.spec = spec_values(doc.spec)
    if st.approval:
        p.approval = (st.approval.by, _seconds(st.approval.at), st.approval.content_hash)
    p.tampered = st.state == "approved" and (
        st.approval is None or st.approval.content_hash != content_hash(doc.spec))
    p.dirty = False
    return p


def plain(value: Any) -> Any:
    """Dataclass dict -> YAML-friendly data: tuples as lists, empty optional parts left out."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items() if v not in ((), None, "")}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def dump(doc: ProfileDocument) -> str:
    data = plain(asdict(doc))
    data.setdefault("spec", {})
    return yaml.dump(data, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper),
                     sort_keys=False, default_flow_style=False, width=100)


def load(path: Union[str, Path]) -> ProfileDocument:
    """Raises otelguard.config.ConfigError listing every problem with file:line."""
    return load_file(ProfileDocument, path)


def parse(data: Any, source: str = "<profile>") -> ProfileDocument:
    return from_mapping(ProfileDocument, data, source=source)


def file_name(workload: str) -> str:
    """A file name for a workload key: readable, and distinct for distinct keys."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in workload)[:150]
    return f"{safe}-{hashlib.sha256(workload.encode()).hexdigest()[:8]}{SUFFIX}"


def write_atomic(path: Path, text: str) -> os.stat_result:
    """Write ``text`` to ``path`` so a crash leaves the old or the new content; returns the new
    file's stat (the stage tells its own writes from a human's edits by it)."""
    return files.write_atomic(path, text, mode=0o644)
