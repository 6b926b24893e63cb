"""What ``/proc/<pid>`` says about a process: the readers the process table uses.

One ``read_proc`` reads ``status`` (ids, capabilities, pid namespaces), ``stat`` (session, tty,
start time), ``cmdline``, ``loginuid`` and the ``exe``/``cwd`` links; every field is None when
unreadable (the process is gone or not ours to read). Pure readers, no caching.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from typing import Optional

CAP_NAMES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK",
    "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)
NO_LOGIN_UID = 4294967295
# the status lines read_proc uses, each found with one str.find (splitting all ~55 lines
# into a dict cost ~13 µs per read, a regex ~20)
_STATUS_KEYS = ("Name", "PPid", "Uid", "Gid", "CapEff", "CapPrm", "NSpid", "NSpgid")


def _status_fields(status: str) -> dict[str, str]:
    text = "\n" + status
    out = {}
    for key in _STATUS_KEYS:
        start = text.find(f"\n{key}:")
        if start >= 0:
            start += len(key) + 2
            end = text.find("\n", start)
            out[key] = text[start:end if end >= 0 else len(text)].strip()
    return out


_CAP_CACHE: dict[int, tuple[str, ...]] = {}


def cap_names(mask: int) -> list[str]:
    """``CapEff`` bit mask to ``CAP_*`` names (unknown bits as ``CAP_<n>``). A node has few
    distinct masks (root's full set, a container runtime's default, none): each is spelled
    once and copied after (~5 µs for the full set, twice per process read)."""
    hit = _CAP_CACHE.get(mask)
    if hit is None:
        hit = tuple(_cap_names(mask))
        if len(_CAP_CACHE) >= 1024:
            _CAP_CACHE.clear()
        _CAP_CACHE[mask] = hit
    return list(hit)


def _cap_names(mask: int) -> list[str]:
    out = []
    bit = 0
    while mask >> bit:
        if (mask >> bit) & 1:
            out.append(CAP_NAMES[bit] if bit < len(CAP_NAMES) else f"CAP_{bit}")
        bit += 1
    return out


def read_text(path: str) -> Optional[str]:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "backslashreplace")
    except OSError:
        return None


def read_link(path: str) -> Optional[str]:
    try:
        return os.readlink(path)
    except OSError:
        return None


@dataclass(frozen=True, slots=True)
class ProcSnapshot:
    """What ``/proc/<pid>`` says right now (None fields: unreadable or gone)."""

    ppid: Optional[int] = None
    comm: Optional[str] = None
    uid: Optional[int] = None
    real_uid: Optional[int] = None
    gid: Optional[int] = None
    caps: Optional[list[str]] = None
    exe_link: Optional[str] = None
    args: Optional[list[str]] = None
    cwd: Optional[str] = None
    tty: Optional[int] = None
    start_ticks: Optional[int] = None
    login_uid: Optional[int] = None
    cap_permitted: Optional[list[str]] = None
    vpid: Optional[int] = None  # innermost NSpid
    vpgid: Optional[int] = None  # innermost NSpgid
    sid: Optional[int] = None  # session (stat), host pid namespace


def read_proc(pid: int, with_args: bool = True, with_cwd: bool = True) -> Optional[ProcSnapshot]:
    """Read the ``/proc/<pid>`` files the table uses; None when the process is gone."""
    status = read_text(f"/proc/{pid}/status")
    if status is None:
        return None
    fields = _status_fields(status)
    ppid = int(fields["PPid"]) if "PPid" in fields else None
    uids = fields.get("Uid", "").split()
    gids = fields.get("Gid", "").split()
    caps = cap_names(int(fields["CapEff"], 16)) if "CapEff" in fields else None
    permitted = cap_names(int(fields["CapPrm"], 16)) if "CapPrm" in fields else None
    tty = start = sid = None
    st = read_text(f"/proc/{pid}/stat")
    if st:
        rest = st[st.rfind(")") + 2:].split()
        # fields after "pid (comm) ": state(3) ppid(4) pgrp(5) session(6) tty_nr(7) ... starttime(22)
        if len(rest) > 19:
            sid = int(rest[3])
            tty = int(rest[4])
            start = int(rest[19])
    args = None
    if with_args:
        raw = read_text(f"/proc/{pid}/cmdline")
        if raw is not None:
            args = [a for a in raw.split("\x00")][:-1] if raw.endswith("\x00") else raw.split("\x00")
    login = read_text(f"/proc/{pid}/loginuid")
    return ProcSnapshot(
        ppid=ppid, comm=fields.get("Name"),
        uid=int(uids[1]) if len(uids) > 1 else None,
        real_uid=int(uids[0]) if uids else None,
        gid=int(gids[1]) if len(gids) > 1 else None,
        caps=caps, exe_link=read_link(f"/proc/{pid}/exe"), args=args,
        cwd=read_link(f"/proc/{pid}/cwd") if with_cwd else None,
        tty=tty, start_ticks=start,
        login_uid=int(login) if login and login.strip().isdigit() else None,
        cap_permitted=permitted, vpid=_innermost(fields.get("NSpid")),
        vpgid=_innermost(fields.get("NSpgid")), sid=sid,
    )


def _innermost(ids: Optional[str]) -> Optional[int]:
    """The last id of an ``NSpid:``-style line (the process's own namespace's view)."""
    last = ids.split()[-1:] if ids else []
    return int(last[0]) if last and last[0].isdigit() else None


def is_self_exe(path: str, pid: int) -> bool:
    """``path`` names the caller's own executable through procfs (``/proc/self/exe``,
    ``/proc/thread-self/exe``, ``/proc/<pid>/exe`` of the caller)."""
    return path in ("/proc/self/exe", "/proc/thread-self/exe", f"/proc/{pid}/exe")


def exe_flags(link: Optional[str]) -> tuple[str, bool, bool]:
    """(path, deleted, from_memfd) from a ``/proc/<pid>/exe`` link."""
    if not link:
        return "", False, False
    deleted = link.endswith(" (deleted)")
    path = link[: -len(" (deleted)")] if deleted else link
    return path, deleted, path.startswith("/memfd:")


def resolve_under(root: str, path: str, max_links: int = 40) -> str:
    """``path`` with its symlinks resolved under the directory ``root`` (a live process's
    ``/proc/<pid>/root``), as the exe link names a file (else ``path`` unchanged). For a
    process gone before its exe link was read: ``/bin/sh`` would otherwise name what a longer
    run names ``/usr/bin/dash``, and behaviour profiles would see two executables. Cost: one
    readlink per path component, only for such processes."""
    if not path.startswith("/"):
        return path
    todo = [p for p in path.split("/") if p][::-1]
    out: list[str] = []
    links = 0
    while todo:
        part = todo.pop()
        if part == ".":
            continue
        if part == "..":
            if out:
                out.pop()
            continue
        try:
            target = os.readlink(root + "/" + "/".join([*out, part]))
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # EINVAL: not a link
                return path
            out.append(part)
            continue
        links += 1
        if links > max_links:
            return path
        if target.startswith("/"):
            out = []
        todo.extend([p for p in target.split("/") if p][::-1])
    return "/" + "/".join(out)
