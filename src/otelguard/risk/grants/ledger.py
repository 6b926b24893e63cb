"""Granted and used per workload, and the verdicts (docs/risk.md#granted-vs-used).

Fed one record at a time by the analyser (under its lock); no I/O. Memory per workload: a few
small sets and one entry per hostPath mount.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, NamedTuple, Optional

from otelguard import semconv as S
from otelguard.risk.grants.config import GrantsConfig

SA_TOKEN_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
SA_TOKEN_DIRS = (SA_TOKEN_MOUNT + "/", "/run/secrets/kubernetes.io/serviceaccount/")
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
# OCI runtimes whose init runs in the container's cgroup before the entrypoint (mounts,
# pivot_root, capset: its privileges are not the workload's)
RUNTIMES = frozenset({"runc", "crun", "youki", "runsc", "kata-runtime"})
_MAX_NEEDS = 8  # reasons kept for privileged: true (the first few prove it; memory stays flat)
_WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND", "O_TMPFILE")
_EINPROGRESS = -115
# What a verdict is about (otelguard.risk.kind) and its word (otelguard.risk.state)
CAPABILITY, TOKEN, HOST_PATH, PRIVILEGED = "capability", "token", "host_path", "privileged"
USED, UNUSED, UNWRITTEN, UNNEEDED, UNVERIFIABLE = (
    "used", "unused", "unwritten", "unneeded", "unverifiable")

_FILE_CHANGES = frozenset({S.EV_FILE_UNLINK, S.EV_FILE_CHMOD, S.EV_FILE_CHOWN, S.EV_FILE_MKDIR,
                           S.EV_FILE_TRUNCATE, S.EV_FILE_SYMLINK, S.EV_FILE_RENAME,
                           S.EV_FILE_LINK})
# the events this analyser reads (the stage hands it only these)
EVENTS = frozenset({S.EV_PROCESS_EXEC, S.EV_FILE_OPEN, S.EV_NETWORK_CONNECT, S.EV_PRIV_CAPABLE,
                    S.EV_UNSHARE, S.EV_SETNS, S.EV_MOUNT, S.EV_MODULE_LOAD, S.EV_BPF}
                   | _FILE_CHANGES)
API_SERVICE = ("default", "kubernetes")  # the API server's Service, as the enricher names peers


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


def owner_of(workload: str) -> Optional[Owner]:
    """``k8s/NS/KIND/NAME/CONTAINER`` (the profiles stage's key) -> Owner; None otherwise."""
    parts = workload.split("/", 4)
    if len(parts) != 5 or parts[0] != "k8s":
        return None
    return Owner(parts[1], parts[2], parts[3], parts[4])


@dataclass(frozen=True)
class ResourceGrants:
    """What one Resource says was granted (from the k8s enricher's attributes)."""

    owner: Owner
    spec_known: bool  # the enricher found the container's spec (mounts attribute present)
    privileged: bool
    added: frozenset[str]
    mounts: tuple[Mount, ...]
    service_account: str


def resource_grants(attrs: Mapping[str, Any], owner: Owner) -> ResourceGrants:
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


class Verdict(NamedTuple):
    kind: str  # capability | token | host_path | privileged
    state: str  # used | unused | unwritten | unneeded | unverifiable
    subject: str  # CAP_NET_ADMIN, the mount's container path, "privileged"
    summary: str
    evidence: str  # the first use ("what (uid)"), "" when none


def _evidence(f: Mapping[str, Any], what: str) -> str:
    """The record's ``log.record.uid``; ``what`` happened when it has none."""
    return str(f.get(S.LOG_RECORD_UID) or what)


class GrantTracker:
    """The ledgers of all workloads (the analyser holds one, and the lock)."""

    def __init__(self, config: GrantsConfig) -> None:
        self.config = config
        self.ledgers: dict[str, Ledger] = {}

    def resource(self, workload: str, grants: ResourceGrants, now: float) -> Ledger:
        """The workload's ledger, its grants refreshed from this Resource (a rollout may change
        them: the newest spec wins)."""
        led = self.ledgers.get(workload)
        if led is None:
            led = self.ledgers[workload] = Ledger(grants, now, now)
        else:
            led.last_seen = now
            if grants != led.grants and grants.spec_known:
                led.grants = grants
        return led

    def observe(self, led: Ledger, event: str, f: Mapping[str, Any]) -> None:
        """One record of ``led``'s workload (``f``: its attributes)."""
        exe = str(f.get(S.PROCESS_EXECUTABLE_PATH) or "")
        if exe.rpartition("/")[2] in RUNTIMES:
            return  # the runtime setting the container up in its cgroup: not the workload's use
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
            if (f.get(S.PEER_K8S_NAMESPACE_NAME), f.get(S.PEER_K8S_SERVICE_NAME)) == API_SERVICE:
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

    def _use(self, led: Ledger, cap: str, f: Mapping[str, Any]) -> None:
        if cap not in led.used_caps:
            led.used_caps[cap] = _evidence(f, f"{cap} check granted")
        if cap not in DEFAULT_CAPABILITIES:
            led.needs_privileged.setdefault(f"{cap} (outside the runtime's default set)",
                                            led.used_caps[cap])

    def _path(self, led: Ledger, path: str, write: bool, f: Mapping[str, Any]) -> None:
        if not path:
            return
        if path.startswith(SA_TOKEN_DIRS):
            led.token_reads += 1
            led.token_evidence = led.token_evidence or _evidence(f, f"open {path}")
            return
        if path.startswith("/dev/") and not path.startswith(_PSEUDO_DEVICES):
            if len(led.needs_privileged) < _MAX_NEEDS:  # a few reasons prove the need
                led.needs_privileged.setdefault(f"device {path}", _evidence(f, f"open {path}"))
        for m in led.grants.mounts:
            if m.host_path and (path == m.dest or path.startswith(m.dest.rstrip("/") + "/")):
                entry = led.host_access.setdefault(m.dest, [0, 0, ""])
                entry[1 if write else 0] += 1
                entry[2] = entry[2] or _evidence(f, f"{'write' if write else 'read'} {path}")

    # --- verdicts ------------------------------------------------------------------------------

    def verdicts(self, led: Ledger) -> list[Verdict]:
        """Every grant of the workload and what was made of it so far (the window decides
        whether "not used yet" may be called unused: the analyser's business)."""
        out: list[Verdict] = []
        g = led.grants
        for cap in sorted(self._granted_caps(led)):
            if cap in led.used_caps:
                out.append(Verdict(CAPABILITY, USED, cap, f"{cap} used", led.used_caps[cap]))
            else:
                out.append(Verdict(CAPABILITY, UNUSED, cap, self._cap_summary(led, cap), ""))
        for m in g.mounts:
            if m.token:
                if led.token_reads:
                    out.append(Verdict(TOKEN, USED, m.dest,
                                       f"service-account token read {led.token_reads} time(s), "
                                       f"{led.api_connects} API server connection(s)",
                                       led.token_evidence))
                else:
                    out.append(Verdict(TOKEN, UNUSED, m.dest, self._token_summary(led),
                                       led.api_evidence))
            elif m.host_path:
                out.append(self._host_verdict(led, m))
        if g.privileged:
            if led.needs_privileged:
                why = sorted(led.needs_privileged)
                out.append(Verdict(PRIVILEGED, USED, PRIVILEGED,
                                   "privileged: true needed for: " + ", ".join(why),
                                   led.needs_privileged[why[0]]))
            else:
                out.append(Verdict(PRIVILEGED, UNNEEDED, PRIVILEGED, "privileged: true, but no "
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

    def _host_verdict(self, led: Ledger, m: Mount) -> Verdict:
        reads, writes, ev = led.host_access.get(m.dest, (0, 0, ""))
        readable = m.dest.startswith(self.config.read_prefixes) or any(
            p.startswith(m.dest.rstrip("/") + "/") for p in self.config.read_prefixes)
        what = f"hostPath {m.source} at {m.dest}"
        if reads or writes:
            if not m.read_only and not writes:
                return Verdict(HOST_PATH, UNWRITTEN, m.dest, f"{what} mounted read-write, "
                               f"only read ({reads} read(s))", ev)
            return Verdict(HOST_PATH, USED, m.dest, f"{what}: {reads} read(s), {writes} "
                           "write(s)", ev)
        if readable:
            return Verdict(HOST_PATH, UNUSED, m.dest,
                           f"{what} never opened, executed or changed", "")
        if not m.read_only:
            return Verdict(HOST_PATH, UNWRITTEN, m.dest, f"{what} mounted read-write and never "
                           "written (reads there are outside the sensor's read prefixes)", "")
        return Verdict(HOST_PATH, UNVERIFIABLE, m.dest, f"{what}: read-only and outside the "
                       "sensor's read prefixes (sensor.probe.read_path_prefixes): reads there "
                       "are not seen", "")
