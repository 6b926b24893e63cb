"""The ``packages`` analyser: which packages each workload really uses
(docs/risk.md#in-use-packages).

``observe`` (the stage's ``process``, no I/O) takes exec records (the executed binary:
``executed``) and successful read-only opens of code files (``code_suffixes``: shared objects
ld.so or dlopen opens, Python sources and bytecode, Node sources and addons, JARs: ``loaded``).
A path already resolved for the instance is counted at once; a new one waits in a bounded
queue (``max_pending``; more: dropped as ``pending_full``) for the resolver thread, which opens
the instance's root (:mod:`rootfs`), resolves the path there, finds the owning package in the
root's :class:`Inventory` and records the use. ``executed`` outranks ``loaded``.

``findings(workload)``: one ``package`` finding per package of the workload's roots, state
``executed``, ``loaded`` or ``installed-only``, with first/last seen, the first
``max_evidence`` record uids and used paths (``as used -> file``); and, for each configured
vulnerability report naming the workload, one ``vulnerability`` finding per affected package
(:mod:`labels`). Memory per workload: its used packages (at most ``max_packages``, each with
``max_evidence`` uids and paths) and the names of its roots' inventories; inventories are
shared (see :mod:`inventory`).
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Optional

from otelguard import semconv as S
from otelguard.risk.analyser import Dropped
from otelguard.risk.model import Finding, Observation
from otelguard.risk.packages import labels
from otelguard.risk.packages.config import PackagesConfig
from otelguard.risk.packages.databases import Package
from otelguard.risk.packages.inventory import Inventory, fingerprint
from otelguard.risk.packages.rootfs import Root, Roots

EXECUTED, LOADED, INSTALLED_ONLY = "executed", "loaded", "installed-only"
STATE_RANK = {EXECUTED: 0, LOADED: 1, INSTALLED_ONLY: 2}
_WRITE = re.compile(r"O_WRONLY|O_RDWR|O_CREAT|O_TRUNC|O_APPEND")
_UNOWNED = Package("", "", "")  # a resolved path no package owns (cached as such)
MAX_RESOLVED = 131_072  # (root, path) -> package resolutions remembered over all workloads
MAX_INSTANCES = 64  # roots remembered per workload (its pods' containers)
MAX_ROOT_KEYS = 8192  # roots whose recent pids and inventory name are remembered

log = logging.getLogger(__name__)


@dataclass
class Use:
    state: str
    first_ns: int
    last_ns: int
    evidence: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    # trace ids (process trees) of the latest uses, newest last: what lets an incident tell
    # that its process loaded this package (docs/incidents.md#risk-facts)
    traces: list[str] = field(default_factory=list)


@dataclass
class _Workload:
    uses: dict[Package, Use] = field(default_factory=dict)
    roots: OrderedDict[str, str] = field(default_factory=OrderedDict)  # root key -> inventory


@dataclass(frozen=True)
class _Pending:
    workload: str
    root_key: str
    container_id: str
    pids: tuple[int, ...]
    path: str
    state: str
    time_ns: int
    uid: str
    invoked: str = ""  # an exec's argv[0] when absolute
    trace: str = ""


class PackageUsage:
    name = "packages"
    events = frozenset({S.EV_PROCESS_EXEC, S.EV_FILE_OPEN})
    fields = frozenset({S.SYSCALL_RET, S.PROCESS_EXECUTABLE_PATH, S.PROCESS_COMMAND_ARGS,
                        S.FILE_PATH, S.FILE_OPEN_FLAGS, S.PROCESS_PID, S.PROCESS_PARENT_PID})
    # what each event's records are read for (the stage's reader proves absent only these)
    fields_by_event = {
        S.EV_PROCESS_EXEC: frozenset({S.SYSCALL_RET, S.PROCESS_EXECUTABLE_PATH,
                                      S.PROCESS_COMMAND_ARGS, S.PROCESS_PID,
                                      S.PROCESS_PARENT_PID}),
        S.EV_FILE_OPEN: frozenset({S.SYSCALL_RET, S.FILE_PATH, S.FILE_OPEN_FLAGS, S.PROCESS_PID,
                                   S.PROCESS_PARENT_PID})}

    def __init__(self, config: PackagesConfig, dropped: Dropped,
                 root_overrides: Optional[dict[str, str]] = None) -> None:
        self.config = config
        self._dropped = dropped
        self._suffixes = tuple(config.code_suffixes)
        self._lock = threading.Lock()
        self._workloads: dict[str, _Workload] = {}
        self._pending: list[_Pending] = []
        # (root, path as recorded) -> (owner, resolved file, path as the container sees it)
        self._resolved: OrderedDict[tuple[str, str], tuple[Package, str, str]] = OrderedDict()
        self._pids: OrderedDict[str, deque[int]] = OrderedDict()
        self._roots = Roots(config.max_roots, root_overrides)
        self._inventories: OrderedDict[str, Inventory] = OrderedDict()
        self._root_inventory: OrderedDict[str, str] = OrderedDict()
        self._reports = labels.ReportCache()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def use_root(self, key: str, directory: str) -> None:
        """Resolve the paths of container id (or instance) ``key`` in ``directory`` instead of
        a live process's root: an image unpacked for an offline check, tests."""
        self._roots.overrides[key] = directory

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="risk-packages", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self._roots.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.config.resolve_interval_seconds)
            self._wake.clear()
            try:
                self.resolve_pending()
            except Exception:  # noqa: BLE001 - the thread must outlive a bad root
                log.exception("risk packages: resolving failed; retrying")

    # --- observe (no I/O) --------------------------------------------------------------------

    def is_code(self, path: str) -> bool:
        if path.endswith(self._suffixes):
            return True
        bare = path.rstrip("0123456789.")  # libfoo.so.1.2.3 -> libfoo.so
        return bare != path and bare.endswith(".so") and path[len(bare)] == "."

    def observe(self, obs: Observation) -> None:
        attrs = obs.attributes
        ret = attrs.get(S.SYSCALL_RET)
        if isinstance(ret, int) and ret < 0:
            return
        invoked = ""
        if obs.event_name == S.EV_PROCESS_EXEC:
            path, state = str(attrs.get(S.PROCESS_EXECUTABLE_PATH) or ""), EXECUTED
            args = attrs.get(S.PROCESS_COMMAND_ARGS)
            if isinstance(args, (list, tuple)) and args and str(args[0]).startswith("/"):
                invoked = str(args[0])  # the name it was run by (a symlink, maybe)
        else:
            path, state = str(attrs.get(S.FILE_PATH) or ""), LOADED
            if not self.is_code(path) or _WRITE.search(str(attrs.get(S.FILE_OPEN_FLAGS) or "")):
                return
        if not path.startswith("/"):
            return
        root_key = obs.container_id or f"host:{obs.host}"
        pid = int(attrs.get(S.PROCESS_PID) or 0)
        ppid = int(attrs.get(S.PROCESS_PARENT_PID) or 0)
        with self._lock:
            w = self._workloads.get(obs.workload)
            if w is None:
                w = self._workloads[obs.workload] = _Workload()
            pids = self._pids.get(root_key)
            if pids is None:
                pids = self._pids[root_key] = deque(maxlen=8)
                while len(self._pids) > MAX_ROOT_KEYS:
                    self._pids.popitem(last=False)
            if pid and (not pids or pids[-1] != pid):
                pids.append(pid)
            hit = self._resolved.get((root_key, path))
            if hit is not None:
                if hit[0] is not _UNOWNED:
                    self._use(w, hit[0], state, obs.time_unix_nano, obs.uid, hit[2], hit[1],
                              obs.trace_id)
                return
            if len(self._pending) >= self.config.max_pending:
                self._dropped("pending_full", 1)
                return
            self._pending.append(_Pending(obs.workload, root_key, obs.container_id,
                                          (pid, ppid, *reversed(pids)), path, state,
                                          obs.time_unix_nano, obs.uid, invoked, obs.trace_id))

    def _use(self, w: _Workload, pkg: Package, state: str, t: int, uid: str, used: str,
             real: str, trace: str = "") -> None:
        u = w.uses.get(pkg)
        if u is None:
            if len(w.uses) >= self.config.max_packages:
                self._dropped("packages_full", 1)
                return
            u = w.uses[pkg] = Use(state, t, t)
        elif STATE_RANK[state] < STATE_RANK[u.state]:
            u.state = state  # executed outranks loaded; the evidence list keeps both kinds
        u.first_ns = min(u.first_ns, t) if t else u.first_ns
        u.last_ns = max(u.last_ns, t)
        n = self.config.max_evidence
        if uid and len(u.evidence) < n and uid not in u.evidence:
            u.evidence.append(uid)
        shown = used if used == real else f"{used} -> {real}"
        if len(u.paths) < n and shown not in u.paths:
            u.paths.append(shown)
        if trace and (not u.traces or u.traces[-1] != trace):
            if trace in u.traces:
                u.traces.remove(trace)
            u.traces.append(trace)
            del u.traces[:-n]

    # --- the resolver thread -----------------------------------------------------------------

    def resolve_pending(self) -> None:
        with self._lock:
            todo, self._pending = self._pending, []
        for p in todo:
            hit = self._resolved.get((p.root_key, p.path))
            if hit is None:
                found = self._resolve(p)
                if found is None:
                    continue
                hit = found
            with self._lock:
                w = self._workloads.get(p.workload)
                if w is None:
                    continue
                inv_key = self._root_inventory.get(p.root_key)
                if inv_key is not None and p.root_key not in w.roots:
                    w.roots[p.root_key] = inv_key
                    while len(w.roots) > MAX_INSTANCES:
                        w.roots.popitem(last=False)
                if hit[0] is not _UNOWNED:
                    self._use(w, hit[0], p.state, p.time_ns, p.uid, hit[2], hit[1], p.trace)

    def _resolve(self, p: _Pending) -> Optional[tuple[Package, str, str]]:
        root = self._roots.get(p.root_key, p.container_id, p.pids)
        if root is None:
            self._dropped("no_root", 1)
            return None
        inv = self._inventory(p.root_key, root)
        used = root.inside(p.path) if p.state == EXECUTED else p.path
        real = root.resolve(used)
        if real is None:
            return None  # gone or never there: nothing to attribute (not cached)
        if p.invoked and p.invoked != used and root.resolve(p.invoked) == real:
            used = p.invoked  # the kernel names the exec by its file; show the link it ran by
        pkg = inv.owner(root, real) or _UNOWNED
        hit = (pkg, real, used)
        with self._lock:
            self._resolved[(p.root_key, p.path)] = hit
            while len(self._resolved) > MAX_RESOLVED:
                self._resolved.popitem(last=False)
        return hit

    def _inventory(self, root_key: str, root: Root) -> Inventory:
        key = self._root_inventory.get(root_key)
        inv = self._inventories.get(key) if key is not None else None
        if inv is None:
            key = fingerprint(root, self.config.python_site_globs)
            inv = self._inventories.get(key)
            if inv is None:
                inv = Inventory.build(root, key, self.config.python_site_globs,
                                      self.config.node_module_globs)
                for path in inv.unsupported:
                    log.warning("risk packages: %s: %s is an rpm database format not read "
                                "(only rpmdb.sqlite is); its packages are not known",
                                root_key, path)
                self._inventories[key] = inv
                while len(self._inventories) > self.config.max_inventories:
                    self._inventories.popitem(last=False)
            with self._lock:
                self._root_inventory[root_key] = key
                while len(self._root_inventory) > MAX_ROOT_KEYS:
                    self._root_inventory.popitem(last=False)
        self._inventories.move_to_end(inv.key)
        return inv

    # --- findings ----------------------------------------------------------------------------

    def states(self, workload: str) -> dict[Package, tuple[str, Optional[Use]]]:
        """Every package of the workload: (state, its use when used)."""
        with self._lock:
            w = self._workloads.get(workload)
            if w is None:
                return {}
            uses = {pkg: Use(u.state, u.first_ns, u.last_ns, list(u.evidence), list(u.paths),
                             list(u.traces))
                    for pkg, u in w.uses.items()}
            invs = [self._inventories.get(k) for k in w.roots.values()]
        out: dict[Package, tuple[str, Optional[Use]]] = {}
        for inv in invs:
            if inv is None:
                continue
            for pkg in list(inv.packages):
                out[pkg] = (INSTALLED_ONLY, None)
        for pkg, u in uses.items():
            out[pkg] = (u.state, u)
        return out

    def findings(self, workload: str) -> list[Finding]:
        states = self.states(workload)
        found = [package_finding(pkg, state, use) for pkg, (state, use) in states.items()]
        found.sort(key=lambda f: (STATE_RANK.get(f.state, 9), f.subject))
        for source in self.config.reports:
            if not labels.applies(source, workload):
                continue
            report = self._reports.get(source.file)
            if report is None:
                self._dropped("report_unreadable", 1)
                continue
            found.extend(labels.label(report, states, source.file))
        return found

    def workloads(self) -> list[str]:
        with self._lock:
            return list(self._workloads)

    def forget(self, workload: str) -> None:
        with self._lock:
            self._workloads.pop(workload, None)


def package_finding(pkg: Package, state: str, use: Optional[Use]) -> Finding:
    attrs: list[tuple[str, Any]] = [
        (S.PACKAGE_NAME, pkg.name), (S.PACKAGE_VERSION, pkg.version),
        (S.PACKAGE_ECOSYSTEM, pkg.ecosystem), (S.PACKAGE_PURL, pkg.purl())]
    if use is not None and use.paths:
        attrs.append((S.RISK_EVIDENCE_PATHS, list(use.paths)))
    how = {EXECUTED: "executed", LOADED: "loaded", INSTALLED_ONLY: "installed, never used"}[state]
    return Finding(
        analyser="packages", kind="package", subject=pkg.key, state=state,
        summary=f"{pkg.ecosystem} package {pkg.name} {pkg.version}: {how}"
        + (f" ({use.paths[0]})" if use is not None and use.paths else ""),
        first_seen_ns=use.first_ns if use else 0, last_seen_ns=use.last_ns if use else 0,
        evidence=tuple(use.evidence) if use else (), attributes=tuple(attrs))


def create(config: Any, dropped: Dropped) -> PackageUsage:
    return PackageUsage(config.packages, dropped)
