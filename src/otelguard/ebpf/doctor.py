"""``otelguard doctor``: checks and explains what the sensor needs on this host.

Each check is a line ``ok|WARN|FAIL name: detail (fix: ...)``. FAIL means the sensor cannot run
(or a probe cannot), so ``main`` exits 1 and prints the fix; WARN is informative (e.g. lockdown,
fallback headers). ``run_checks()`` is the same list for tests and the run summary. It compiles
one tiny BPF program (~1 s) and says whether the sensor's program is in the program cache.
"""

from __future__ import annotations

import argparse
import os
from typing import Optional, Sequence
from dataclasses import dataclass
from pathlib import Path

from otelguard.ebpf import headers
from otelguard.ebpf.cgroup import cgroup2_mount
from otelguard.ebpf.registry import discover
from otelguard.ebpf.settings import SensorConfig, tracefs_root

OK, WARN, FAIL = "ok", "WARN", "FAIL"
CAP_PERFMON, CAP_BPF, CAP_SYS_ADMIN = 38, 39, 21


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | WARN | FAIL
    detail: str
    fix: str = ""

    def operator_line(self) -> str:
        """The check as one line naming cause and fix (the CLI's exit-2 message)."""
        return f"{self.name}: {self.detail}" + (f"; fix: {self.fix}" if self.fix else "")

    def line(self) -> str:
        fix = f" (fix: {self.fix})" if self.fix and self.status != OK else ""
        return f"{self.status} {self.name}: {self.detail}{fix}"


def _cap_eff() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def check_kernel() -> Check:
    """The running kernel (release, build, machine): what a bug report needs first. The
    probes need BPF ring buffers (5.8+); ``ringbuf`` below proves it on this kernel."""
    u = os.uname()
    return Check("kernel", OK, f"{u.sysname} {u.release} {u.machine} ({u.version})")


def check_privileges() -> Check:
    caps = _cap_eff()

    def has(bit: int) -> bool:
        return bool(caps >> bit & 1)

    if has(CAP_BPF) and has(CAP_PERFMON) or has(CAP_SYS_ADMIN):
        who = "root" if os.geteuid() == 0 else f"uid {os.geteuid()}"
        return Check("privileges", OK, f"{who} with CAP_BPF+CAP_PERFMON"
                     + (" (and CAP_SYS_ADMIN)" if has(CAP_SYS_ADMIN) else ""))
    return Check("privileges", FAIL, "missing CAP_BPF/CAP_PERFMON",
                 "run as root, or grant CAP_BPF,CAP_PERFMON (DaemonSet securityContext)")


def check_btf() -> Check:
    p = Path("/sys/kernel/btf/vmlinux")
    if p.exists():
        return Check("btf", OK, f"{p} present ({p.stat().st_size // 1024} KiB)")
    return Check("btf", WARN, f"{p} missing; BCC compiles from headers instead",
                 "enable CONFIG_DEBUG_INFO_BTF (not required by otelguard's tracepoint probes)")


def check_tracefs() -> Check:
    root = tracefs_root()
    if (root / "events").is_dir():
        return Check("tracefs", OK, f"mounted at {root}")
    return Check("tracefs", FAIL, f"{root}/events not found",
                 "mount -t tracefs nodev /sys/kernel/tracing (or set OTELGUARD_TRACEFS)")


def check_tracepoints() -> list[Check]:
    events = tracefs_root() / "events"
    reg = discover()
    out: list[Check] = []
    for probe in reg.probes:
        tps = probe.tracepoints()
        missing = [tp for tp in tps if not (events / tp.replace(":", "/", 1)).is_dir()]
        if missing:
            detail = f"missing {', '.join(missing)}; those handlers are compiled out"
            fix = "a newer kernel, or CONFIG_FTRACE_SYSCALLS"
            if all("_module" in tp for tp in missing) and not Path("/proc/modules").exists():
                # no /proc/modules: the kernel has no loadable-module support at all, so there
                # is no module load to watch for (and none for an attacker to make)
                detail += " (kernel built without CONFIG_MODULES: modules cannot be loaded here)"
                fix = "nothing to fix: without module support there is no module load to see"
            out.append(Check(f"tracepoints[{probe.name}]", WARN if len(missing) < len(tps)
                             else FAIL, detail, fix))
        else:
            out.append(Check(f"tracepoints[{probe.name}]", OK, f"all {len(tps)} present"))
    for area, reason in reg.skipped.items():
        out.append(Check(f"probe[{area}]", WARN, reason))
    return out


def check_lockdown() -> Check:
    p = Path("/sys/kernel/security/lockdown")
    try:
        text = p.read_text().strip()
    except OSError:
        return Check("lockdown", WARN, f"{p} unreadable (securityfs not mounted?)",
                     "mount -t securityfs none /sys/kernel/security")
    mode = lockdown_mode(text)
    if mode == "none":
        return Check("lockdown", OK, "lockdown=none")
    return Check("lockdown", WARN if mode == "confidentiality" else OK,
                 f"lockdown={mode}: kprobes, fentry/fexit, BPF LSM and kernel memory reads may be "
                 "denied (and kprobes are not built here); otelguard needs none of them: "
                 "tracepoints, helpers and user-memory reads only")


def lockdown_mode(text: str) -> str:
    """The active mode from ``/sys/kernel/security/lockdown`` ("none [integrity] ...")."""
    if "[" in text and "]" in text:
        return text[text.find("[") + 1:text.find("]")]
    return text.strip()


def check_headers() -> Check:
    """Which headers BCC compiles with: host (matching or setup.sh's fallback link), the image's
    fallback tree, or an operator's ``BCC_KERNEL_SOURCE``; see :mod:`otelguard.ebpf.headers`."""
    found = headers.resolve()
    if found.source == "none":
        return Check("kernel-headers", FAIL, found.detail,
                     "mount the host's /lib/modules and /usr/src, install linux-headers for this "
                     "kernel, or run scripts/setup.sh to link Debian's newest headers as a "
                     "fallback")
    if found.source in ("host", "env"):
        return Check("kernel-headers", OK, found.detail)
    return Check("kernel-headers", WARN, f"{found.detail}; safe for otelguard: probes use "
                 "tracepoint layouts from tracefs, no struct offsets",
                 "mount the host's matching headers to silence this")


def check_bcc() -> Check:
    try:
        from otelguard.ebpf.loader import bcc_version

        return Check("bcc", OK, f"found, version {bcc_version()} (not imported: it compiles "
                     "only when the program cache misses)")
    except ImportError as exc:
        return Check("bcc", FAIL, f"not importable: {exc}",
                     "apt-get install python3-bpfcc and run `make setup`")


def check_ringbuf() -> Check:
    try:
        from otelguard.ebpf.loader import ringbuf_selftest

        return Check("ringbuf", OK, ringbuf_selftest())
    except ImportError as exc:
        return Check("ringbuf", FAIL, f"BCC missing: {exc}", "see the bcc check")
    except Exception as exc:  # any BCC/kernel failure is the answer this check reports
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return Check("ringbuf", FAIL, f"tiny ring-buffer program failed: {detail}",
                     "kernel >= 5.8 with BPF ring buffers, CAP_BPF+CAP_PERFMON")


def check_program_cache(config: Optional[SensorConfig] = None) -> Check:
    """Whether the next start of a sensor with ``config`` (default: the default sensor config)
    loads from the program cache (seconds, no compiler) or compiles (progcache.py)."""
    from otelguard.ebpf.loader import program_cache, program_key

    cfg = config or SensorConfig()
    cache = program_cache(cfg)
    if cache is None:
        return Check("program-cache", WARN, "off (sensor.program_cache: false): every start "
                     "compiles with BCC (~10-20 s, ~140 MB of RSS)",
                     "set sensor.program_cache: true")
    path = cache.path(program_key(cfg))
    count = len(cache.entries()) if cache.directory.is_dir() else 0
    where = f"{cache.directory} ({count} program(s) kept)"
    probe = cache.directory if cache.directory.is_dir() else cache.directory.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        return Check("program-cache", WARN, f"{where} is not writable: every start compiles",
                     "make the directory writable, or set sensor.program_cache_dir (on "
                     "Kubernetes a hostPath, so a restarted pod finds it)")
    if path.is_file():
        return Check("program-cache", OK, f"hit: {path.name} is this config's program; the next "
                     f"start loads it without the compiler; {where}")
    return Check("program-cache", OK, f"miss: this config's program is not cached yet; the next "
                 f"start compiles (~10-20 s) and keeps it; {where}")


def check_cgroup2() -> Check:
    root = cgroup2_mount()
    if root is None:
        return Check("cgroup-v2", FAIL, "no cgroup2 mount at /sys/fs/cgroup or "
                     "/sys/fs/cgroup/unified", "mount -t cgroup2 none /sys/fs/cgroup/unified")
    return Check("cgroup-v2", OK, f"mounted at {root} (cgroup id = directory inode)")


def preflight() -> Optional[Check]:
    """The first operator mistake that stops the sensor before it loads anything: no
    CAP_BPF/CAP_PERFMON (not root), or BCC not importable. ``otelguard run`` and ``agent``
    exit 2 with its one line instead of a traceback; costs a few ms (BCC's package is looked
    up, not imported: importing it maps LLVM, which a start from the program cache avoids)."""
    for check in (check_privileges, check_bcc):
        result = check()
        if result.status == FAIL:
            return result
    return None


def run_checks(sensor: Optional[SensorConfig] = None) -> list[Check]:
    checks = [check_kernel(), check_privileges(), check_btf(), check_tracefs()]
    checks += check_tracepoints()
    checks += [check_lockdown(), check_headers(), check_bcc(), check_ringbuf(), check_cgroup2(),
               check_program_cache(sensor)]
    return checks


def main(args: argparse.Namespace, extra: Sequence[Check] = (),
         sensor: Optional[SensorConfig] = None) -> int:
    """Print every check (``extra``: the agent config's, from ``otelguard.agent``; ``sensor``:
    its sensor section, whose program the program-cache check looks up)."""
    checks = run_checks(sensor) + list(extra)
    for c in checks:
        print(c.line())
    failed = [c for c in checks if c.status == FAIL]
    if failed:
        print(f"\n{len(failed)} check(s) failed; the sensor cannot run as is:")
        for c in failed:
            print(f"  {c.name}: {c.fix}")
        return 1
    print("\nall required checks passed")
    return 0
