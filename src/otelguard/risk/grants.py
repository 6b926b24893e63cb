"""Granted vs used: which permissions a workload holds and never exercised.

Per workload (one container of one controller: the profiles stage's key, so every replica
counts) the ledger keeps what was **granted** and what was **used**:

- capabilities: granted = the pod spec's ``securityContext.capabilities.add`` (the enricher's
  ``otelguard.k8s.pod.added_capabilities``) and every process's effective set
  (``otelguard.process.cap_effective`` of exec, open, connect and capability records, so
  processes older than the agent count too); used = a *granted* ``cap_capable`` check
  (``otelguard.privilege.capability_use`` with result 0). ``CAP_SYS_ADMIN`` checks are not read
  (the kernel checks it without audit in every root process's memory accounting,
  docs/profiles.md#capabilities); its uses are a successful unshare of a namespace that needs it,
  setns and mount, as in the profiles stage;
- the service-account token: granted = a volume mount at
  ``/var/run/secrets/kubernetes.io/serviceaccount`` in ``otelguard.k8s.container.mounts``; used =
  an open of a file under it (``/run/secrets/...`` too), with connections to the API server as
  further evidence (``api_server`` decides which peers are the API server, from the tier map);
- hostPath mounts: granted = a mount whose source is not a kubelet volume directory; used = an
  open, exec or change of a path under its container path. Read-only opens reach the processor
  only under the sensor's read prefixes (``read_prefixes``, the kernel filter's list), so a
  hostPath outside them is judged on writes alone (a writable mount unwritten: ``readOnly``);
  a read-only mount outside them cannot be judged and is said so (``unverifiable``), never
  reported unused;
- ``privileged: true``: needed when the workload used a capability outside the runtime's default
  set, loaded a module, called bpf(), mounted, or opened a device node other than the
  pseudo-devices every process opens; otherwise the finding suggests ``privileged: false`` with
  exactly the capabilities it used.

A grant is reported unused only after ``learning_seconds`` of observation since the workload
was first seen (each finding says how long), once per (workload, grant); its suggestion is a
strategic-merge patch of the controller (``kubectl patch --type strategic``).

Cost: per record of the handful of event kinds read, one pass over its attributes; nothing for
others. Memory per workload: a few small sets (bounded by ``max_workloads``; the least
recently seen workload is forgotten beyond it, counted).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

from otelguard import semconv as S
from otelguard.config import Checks
from otelguard.otlp.messages import from_any

SA_TOKEN_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
_SA_TOKEN_DIRS = (SA_TOKEN_MOUNT + "/", "/run/secrets/kubernetes.io/serviceaccount/")
_KUBELET_VOLUMES = "/var/lib/kubelet/pods/"
SYS_ADMIN = "CAP_SYS_ADMIN"
# containerd's and CRI-O's default set (runtime-spec defaults): a privileged container needs
# privileged only for what lies outside it (or for devices, mounts, modules, bpf).
DEFAULT_CAPABILITIES = frozenset({
    "CAP_AUDIT_WRITE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_MKNOD", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW", "CAP_SETFCAP", "CAP_SETGID",
    "CAP_SETPCAP", "CAP_SETUID", "CAP_SYS_CHROOT",
})
# unshare flags that need CAP_SYS_ADMIN (CLONE_NEWUSER alone needs none)
_SYS_ADMIN_NAMESPACES = frozenset({"CLONE_NEWNS", "CLONE_NEWUTS", "CLONE_NEWIPC", "CLONE_NEWPID",
                                   "CLONE_NEWNET", "CLONE_NEWCGROUP", "CLONE_NEWTIME"})
# device nodes any unprivileged container has (the runtime's default devices and ptys)
_PSEUDO_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom",
                   "/dev/tty", "/dev/console", "/dev/pts/", "/dev/ptmx", "/dev/shm/", "/dev/fd/",
                   "/dev/stdin", "/dev/stdout", "/dev/stderr", "/dev/mqueue/", "/dev/termination-log")
_WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND", "O_TMPFILE")
_EINPROGRESS = -115
# the sensor's default read prefixes (ebpf ProbeConfig.read_path_prefixes): reads elsewhere
# never reach the processor
SENSOR_READ_PREFIXES = (
    "/etc/", "/root/", "/boot/", "/proc/sys/", "/sys/fs/cgroup", "/dev/", "/var/run/secrets",
    "/run/secrets", "/home/", "/usr/bin/", "/usr/sbin/", "/bin/", "/sbin/", "/var/log/",
)

# Finding kinds (otelguard.risk.finding)
UNUSED_CAPABILITY = "unused_capability"
UNUSED_TOKEN = "unused_service_account_token"
UNUSED_HOST_PATH = "unused_host_path"
UNWRITTEN_HOST_PATH = "unwritten_host_path"
UNNEEDED_PRIVILEGED = "unneeded_privileged"

_FILE_CHANGES = frozenset({S.EV_FILE_UNLINK, S.EV_FILE_CHMOD, S.EV_FILE_CHOWN, S.EV_FILE_MKDIR,
                           S.EV_FILE_TRUNCATE, S.EV_FILE_SYMLINK, S.EV_FILE_RENAME,
                           S.EV_FILE_LINK})
# event name -> the record attributes this analyser reads (nothing else is scanned)
_BASE = (S.SYSCALL_RET, S.LOG_RECORD_UID, S.PROCESS_CAP_EFFECTIVE, S.PROCESS_EXECUTABLE_PATH)
READS: dict[str, frozenset[str]] = {
    S.EV_PROCESS_EXEC: frozenset(_BASE),
    S.EV_FILE_OPEN: frozenset(_BASE + (S.FILE_PATH, S.FILE_OPEN_FLAGS)),
    S.EV_NETWORK_CONNECT: frozenset(_BASE + (S.NETWORK_PEER_ADDRESS, S.NETWORK_PEER_PORT,
                                             S.PEER_K8S_NAMESPACE_NAME,
                                             S.PEER_K8S_SERVICE_NAME)),
    S.EV_PRIV_CAPABLE: frozenset(_BASE + (S.CAPABILITY,)),
    S.EV_UNSHARE: frozenset(_BASE + (S.NAMESPACE_FLAGS,)),
    S.EV_SETNS: frozenset(_BASE), S.EV_MOUNT: frozenset(_BASE),
    S.EV_MODULE_LOAD: frozenset(_BASE), S.EV_BPF: frozenset(_BASE),
    **{name: frozenset(_BASE + (S.FILE_PATH, S.FILE_TARGET_PATH)) for name in _FILE_CHANGES},
}


@dataclass(frozen=True)
class GrantsConfig:
    """Granted-vs-used analysis (docs/risk-grants.md)."""

    enabled: bool = True
    # Observation needed before a grant can be called unused (per workload, from its first
    # record); a shorter window reports grants that a rare code path (a monthly job, failover)
    # would have used.
    learning_seconds: float = 86400.0
    # Workloads tracked at once; beyond, the least recently seen one is forgotten (counted).
    max_workloads: int = 10000
    # The sensor's read prefixes (its kernel filter): a read-only open elsewhere is never seen,
    # so a hostPath mounted outside them is judged on writes only. Keep equal to
    # sensor.probe.read_path_prefixes.
    read_prefixes: tuple[str, ...] = SENSOR_READ_PREFIXES

    def __post_init__(self) -> None:
        checks = Checks()
        checks.at_least(self, 0, "learning_seconds")
        checks.at_least(self, 1, "max_workloads")
        for i, prefix in enumerate(self.read_prefixes):
            if not prefix.startswith("/"):
                checks.add(f"read_prefixes[{i}]", f"must be an absolute path, got {prefix!r}")
        checks.done()


@dataclass(frozen=True)
class Mount:
    source: str
    dest: str
    read_only: bool

    @property
    def host_path(self) -> bool:
        return not self.source.startswith(_KUBELET_VOLUMES)

    @property
    def token(self) -> bool:
        return self.dest.rstrip("/") == SA_TOKEN_MOUNT or self.dest.startswith(SA_TOKEN_MOUNT + "/")


def parse_mount(item: str) -> Optional[Mount]:
    """One ``otelguard.k8s.container.mounts`` item (Falco's ``source:dest:mode:rdwr:prop``)."""
    head, *tail = item.rsplit(":", 3)
    if len(tail) != 3:
        return None
    source, sep, dest = head.rpartition(":")
    if not sep or not dest.startswith("/"):
        return None
    return Mount(source, dest, tail[0] == "ro" or tail[1] == "false")


@dataclass(frozen=True)
class Owner:
    """Where the suggestion applies: the top controller (or bare pod) and container."""

    namespace: str
    kind: str  # Deployment, StatefulSet, DaemonSet, CronJob, Job, ReplicaSet, Pod ("" unknown)
    name: str
    container: str


@dataclass(frozen=True)
class ResourceGrants:
    """What one Resource says was granted (from the k8s enricher's attributes)."""

    owner: Owner
    spec_known: bool  # the enricher found the container's spec (mounts attribute present)
    privileged: bool
    added: frozenset[str]
    mounts: tuple[Mount, ...]
    service_account: str


def resource_grants(attrs: dict[str, Any], owner: Owner) -> ResourceGrants:
    """From a Resource's attributes as a dict (``otelguard.otlp.messages.attrs_dict``)."""
    raw_mounts = attrs.get(S.K8S_CONTAINER_MOUNTS)
    mounts = tuple(m for m in (parse_mount(str(x)) for x in raw_mounts or ()) if m is not None)
    return ResourceGrants(
        owner, isinstance(raw_mounts, list), bool(attrs.get(S.K8S_POD_PRIVILEGED)),
        frozenset(str(c) for c in attrs.get(S.K8S_POD_ADDED_CAPABILITIES) or ()), mounts,
        str(attrs.get(S.K8S_POD_SERVICE_ACCOUNT) or ""))


@dataclass(slots=True)
class Ledger:
    """Granted and used, for one workload."""

    grants: ResourceGrants
    first_seen: float
    last_seen: float
    effective: set[str] = field(default_factory=set)
    used_caps: dict[str, str] = field(default_factory=dict)  # cap -> evidence
    token_reads: int = 0
    token_evidence: str = ""
    api_connects: int = 0
    api_evidence: str = ""
    # container path of a hostPath mount -> [reads, writes, first evidence]
    host_access: dict[str, list[Any]] = field(default_factory=dict)
    needs_privileged: dict[str, str] = field(default_factory=dict)  # why -> evidence
    reported: set[str] = field(default_factory=set)

    def observed_seconds(self, now: float) -> float:
        return max(0.0, now - self.first_seen)


@dataclass(frozen=True)
class GrantFinding:
    """One unused grant, with its least-privilege suggestion."""

    workload: str
    owner: Owner
    kind: str
    grant: str  # CAP_NET_ADMIN, the token mount, the hostPath container path, "privileged"
    summary: str
    suggestion: str  # YAML: a strategic-merge patch of the controller
    observed_seconds: float
    learning_seconds: float
    evidence: tuple[str, ...] = ()  # what was used instead (uids or short facts)


def _evidence(f: dict[str, Any], what: str) -> str:
    uid = f.get(S.LOG_RECORD_UID)
    return f"{what} ({uid})" if uid else what


class GrantTracker:
    """The ledgers of all workloads. ``observe`` per record (from the stage's ``process``),
    ``due`` on the flush timer; no I/O."""

    def __init__(self, config: GrantsConfig,
                 api_server: Callable[[str, int, dict[str, Any]], bool] = lambda a, p, f: False,
                 ) -> None:
        self.config = config
        self.api_server = api_server
        self.ledgers: OrderedDict[str, Ledger] = OrderedDict()
        self.evicted = 0

    # --- input ---------------------------------------------------------------------------------

    def resource(self, workload: str, grants: ResourceGrants, now: float) -> Ledger:
        """The workload's ledger, its grants refreshed from this Resource (a rollout may change
        them: the newest spec wins)."""
        led = self.ledgers.get(workload)
        if led is None:
            led = Ledger(grants, now, now)
            self.ledgers[workload] = led
            while len(self.ledgers) > self.config.max_workloads:
                self.ledgers.popitem(last=False)
                self.evicted += 1
        else:
            self.ledgers.move_to_end(workload)
            led.last_seen = now
            if grants != led.grants and grants.spec_known:
                led.grants = grants
        return led

    def observe(self, led: Ledger, event: str, f: dict[str, Any]) -> None:
        """One record of ``led``'s workload; ``f`` holds the keys ``READS[event]`` names."""
        caps = f.get(S.PROCESS_CAP_EFFECTIVE)
        if caps:
            led.effective.update(caps)
        ret = f.get(S.SYSCALL_RET, 0)
        if event == S.EV_PRIV_CAPABLE:
            cap = f.get(S.CAPABILITY) or ""
            if cap and cap != SYS_ADMIN and ret == 0:
                self._use(led, cap, f)
            return
        if event == S.EV_FILE_OPEN:
            if ret < 0:
                return
            path = f.get(S.FILE_PATH) or ""
            write = any(flag in (f.get(S.FILE_OPEN_FLAGS) or "") for flag in _WRITE_FLAGS)
            self._path(led, path, write, f)
            return
        if event in _FILE_CHANGES:
            if ret >= 0:
                self._path(led, f.get(S.FILE_PATH) or "", True, f)
                if f.get(S.FILE_TARGET_PATH):
                    self._path(led, f[S.FILE_TARGET_PATH], True, f)
            return
        if event == S.EV_PROCESS_EXEC:
            if ret >= 0:
                self._path(led, f.get(S.PROCESS_EXECUTABLE_PATH) or "", False, f)
            return
        if event == S.EV_NETWORK_CONNECT:
            if ret < 0 and ret != _EINPROGRESS:
                return
            addr = f.get(S.NETWORK_PEER_ADDRESS) or ""
            port = f.get(S.NETWORK_PEER_PORT) or 0
            if self.api_server(addr, port, f):
                led.api_connects += 1
                led.api_evidence = led.api_evidence or _evidence(f, f"connect {addr}:{port}")
            return
        if ret < 0:
            return
        if event == S.EV_UNSHARE:
            if not _SYS_ADMIN_NAMESPACES.isdisjoint((f.get(S.NAMESPACE_FLAGS) or "").split("|")):
                self._use(led, SYS_ADMIN, f)
        elif event in (S.EV_SETNS, S.EV_MOUNT):
            self._use(led, SYS_ADMIN, f)
            if event == S.EV_MOUNT:
                led.needs_privileged.setdefault("mount", _evidence(f, "mount"))
        elif event == S.EV_MODULE_LOAD:
            led.needs_privileged.setdefault("kernel module load", _evidence(f, "module load"))
        elif event == S.EV_BPF:
            led.needs_privileged.setdefault("bpf()", _evidence(f, "bpf"))

    def _use(self, led: Ledger, cap: str, f: dict[str, Any]) -> None:
        if cap not in led.used_caps:
            led.used_caps[cap] = _evidence(f, f"{cap} check granted")
        if cap not in DEFAULT_CAPABILITIES:
            led.needs_privileged.setdefault(f"{cap} (outside the runtime's default set)",
                                            led.used_caps[cap])

    def _path(self, led: Ledger, path: str, write: bool, f: dict[str, Any]) -> None:
        if not path:
            return
        if path.startswith(_SA_TOKEN_DIRS):
            led.token_reads += 1
            led.token_evidence = led.token_evidence or _evidence(f, f"open {path}")
            return
        if path.startswith("/dev/") and not path.startswith(_PSEUDO_DEVICES):
            led.needs_privileged.setdefault(f"device {path}", _evidence(f, f"open {path}"))
        for m in led.grants.mounts:
            if m.host_path and (path == m.dest or path.startswith(m.dest.rstrip("/") + "/")):
                entry = led.host_access.setdefault(m.dest, [0, 0, ""])
                entry[1 if write else 0] += 1
                entry[2] = entry[2] or _evidence(f, f"{'write' if write else 'read'} {path}")

    # --- verdicts ------------------------------------------------------------------------------

    def verdicts(self, workload: str, led: Ledger, now: float) -> list[tuple[str, str, str, str]]:
        """(kind-or-'used'/'unverifiable', grant, summary, evidence) for every grant of the
        workload, whatever the window: what ``otelguard risk show`` prints."""
        out: list[tuple[str, str, str, str]] = []
        g = led.grants
        for cap in sorted(self._granted_caps(led)):
            if cap in led.used_caps:
                out.append(("used", cap, "capability used", led.used_caps[cap]))
            else:
                out.append((UNUSED_CAPABILITY, cap, self._cap_summary(led, cap), ""))
        for m in g.mounts:
            if m.token:
                if led.token_reads:
                    out.append(("used", m.dest, f"token read {led.token_reads} time(s), "
                                f"{led.api_connects} API server connection(s)",
                                led.token_evidence))
                else:
                    out.append((UNUSED_TOKEN, m.dest, self._token_summary(led), led.api_evidence))
            elif m.host_path:
                out.append(self._host_verdict(led, m))
        if g.privileged:
            if led.needs_privileged:
                why = sorted(led.needs_privileged)
                out.append(("used", "privileged", "needed for: " + ", ".join(why),
                            led.needs_privileged[why[0]]))
            else:
                out.append((UNNEEDED_PRIVILEGED, "privileged", "privileged: true, but no "
                            "capability outside the runtime's default set, device, mount, "
                            "module load or bpf() was used", ""))
        return out

    def _granted_caps(self, led: Ledger) -> set[str]:
        """Spec-added capabilities and the processes' effective sets; for a privileged
        container the spec's only (its effective set is every capability: the privileged
        finding covers those)."""
        if led.grants.privileged:
            return set(led.grants.added)
        return set(led.grants.added) | led.effective

    def _cap_summary(self, led: Ledger, cap: str) -> str:
        source = "securityContext.capabilities.add" if cap in led.grants.added else \
            "the processes' effective set"
        return f"{cap} granted ({source}) and never used"

    def _token_summary(self, led: Ledger) -> str:
        sa = led.grants.service_account or "default"
        return (f"service-account token of {sa!r} mounted and never read"
                + (f"; {led.api_connects} API server connection(s) without it"
                   if led.api_connects else "; no API server connection"))

    def _host_verdict(self, led: Ledger, m: Mount) -> tuple[str, str, str, str]:
        reads, writes, ev = led.host_access.get(m.dest, (0, 0, ""))
        readable = m.dest.startswith(self.config.read_prefixes) or any(
            p.startswith(m.dest.rstrip("/") + "/") for p in self.config.read_prefixes)
        what = f"hostPath {m.source} at {m.dest}"
        if reads or writes:
            if not m.read_only and not writes:
                return (UNWRITTEN_HOST_PATH, m.dest, f"{what} mounted read-write, only read "
                        f"({reads} read(s))", ev)
            return ("used", m.dest, f"{what}: {reads} read(s), {writes} write(s)", ev)
        if readable:
            return (UNUSED_HOST_PATH, m.dest, f"{what} never opened, executed or changed", "")
        if not m.read_only:
            return (UNWRITTEN_HOST_PATH, m.dest, f"{what} mounted read-write and never "
                    "written (reads there are outside the sensor's read prefixes)", "")
        return ("unverifiable", m.dest, f"{what}: read-only and outside the sensor's read "
                "prefixes (sensor.probe.read_path_prefixes): reads there are not seen", "")

    def due(self, now: float) -> list[GrantFinding]:
        """Findings for the grants of every workload past its learning window that are unused
        and not reported yet (each once per workload and grant)."""
        out: list[GrantFinding] = []
        window = self.config.learning_seconds
        for workload, led in self.ledgers.items():
            observed = led.observed_seconds(now)
            if observed < window or not led.grants.spec_known:
                continue
            for kind, grant, summary, evidence in self.verdicts(workload, led, now):
                key = f"{kind}|{grant}"
                if kind in ("used", "unverifiable") or key in led.reported:
                    continue
                led.reported.add(key)
                out.append(GrantFinding(
                    workload, led.grants.owner, kind, grant, summary,
                    suggestion(kind, grant, led), observed, window,
                    tuple(e for e in (evidence,) if e)))
        return out

    def unused_capabilities(self, now: float) -> dict[str, int]:
        """Workload -> unused capabilities, for workloads past their window (the gauge)."""
        out: dict[str, int] = {}
        for workload, led in self.ledgers.items():
            if led.observed_seconds(now) >= self.config.learning_seconds:
                out[workload] = len(self._granted_caps(led) - set(led.used_caps))
        return out


# --- suggestions ------------------------------------------------------------------------------


def k8s_cap(cap: str) -> str:
    """``CAP_NET_ADMIN`` -> ``NET_ADMIN`` (the pod spec's spelling)."""
    return cap[4:] if cap.startswith("CAP_") else cap


def least_capabilities(led: Ledger) -> dict[str, Any]:
    """The capabilities stanza that keeps exactly what was used (``add: null`` deletes the
    spec's list in a strategic merge when nothing was used)."""
    used = sorted(k8s_cap(c) for c in led.used_caps)
    return {"drop": ["ALL"], "add": used or None}


def _pod_spec_path(kind: str) -> list[str]:
    if kind == "Pod" or not kind:
        return ["spec"]
    if kind == "CronJob":
        return ["spec", "jobTemplate", "spec", "template", "spec"]
    return ["spec", "template", "spec"]


def patch(owner: Owner, pod_spec: dict[str, Any], container: Optional[dict[str, Any]]) -> dict[str, Any]:
    """A strategic-merge patch of ``owner`` setting ``pod_spec`` fields and, when given, the
    container's (merged by name)."""
    spec = dict(pod_spec)
    if container is not None:
        spec["containers"] = [{"name": owner.container, **container}]
    body: dict[str, Any] = spec
    for key in reversed(_pod_spec_path(owner.kind)):
        body = {key: body}
    return body


def suggestion(kind: str, grant: str, led: Ledger) -> str:
    """The least-privilege change for one finding, as YAML with a comment naming the target."""
    o = led.grants.owner
    if kind == UNUSED_CAPABILITY:
        body = patch(o, {}, {"securityContext": {"capabilities": least_capabilities(led)}})
        note = f"drop {grant}: keep only the capabilities used"
    elif kind == UNNEEDED_PRIVILEGED:
        body = patch(o, {}, {"securityContext": {
            "privileged": False, "allowPrivilegeEscalation": False,
            "capabilities": least_capabilities(led)}})
        note = "privileged: false, with only the capabilities used"
    elif kind == UNUSED_TOKEN:
        body = patch(o, {"automountServiceAccountToken": False}, None)
        note = "do not mount the service-account token"
    elif kind == UNWRITTEN_HOST_PATH:
        body = patch(o, {}, {"volumeMounts": [{"mountPath": grant, "readOnly": True}]})
        note = f"mount {grant} read-only"
    else:  # UNUSED_HOST_PATH
        body = patch(o, {}, {"volumeMounts": [{"mountPath": grant, "$patch": "delete"}]})
        note = f"remove the mount at {grant} (and its hostPath volume if nothing else uses it)"
    target = f"{o.kind or 'Pod'} {o.namespace}/{o.name}"
    return (f"# {target}, container {o.container}: {note}\n"
            f"# kubectl -n {o.namespace} patch {(o.kind or 'Pod').lower()} {o.name} "
            f"--type strategic --patch-file <this file>\n" + _yaml(body))


def _yaml(value: Any, indent: int = 0) -> str:
    """Block YAML of plain dicts/lists/scalars (JSON scalars are valid YAML)."""
    pad = "  " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, (dict, list)) and v:
                lines.append(f"{pad}{_scalar(k)}:")
                lines.append(_yaml(v, indent + 1).rstrip("\n"))
            else:
                lines.append(f"{pad}{_scalar(k)}: {_scalar(v)}")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict) and item:
                first, *rest = _yaml(item, indent + 1).rstrip("\n").split("\n")
                lines.append(f"{pad}- {first.lstrip()}")
                lines.extend(rest)
            else:
                lines.append(f"{pad}- {_scalar(item)}")
    return "\n".join(lines) + "\n"


def _scalar(v: Any) -> str:
    if isinstance(v, str) and v and all(c.isalnum() or c in "_-./" for c in v) and \
            v.lower() not in ("true", "false", "null", "yes", "no", "on", "off", "~"):
        return v
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return json.dumps(v)


def read_fields(attributes: Iterable[Any], wanted: frozenset[str]) -> dict[str, Any]:
    """The ``wanted`` keys of a record's KeyValues, as Python values (one pass)."""
    return {kv.key: from_any(kv.value) for kv in attributes if kv.key in wanted}
