"""proc.* and thread.*: the process, its parent and ancestors (proc.aname/apid[N]), its
capabilities and session.

Names follow Falco: ``proc.name`` is the kernel comm (15 characters), ``proc.exe`` the first
command-line word, ``proc.pname`` the parent's comm. Ancestors come from the agent's ancestor
list (names and pids, nearest first); ``proc.aexe``/``proc.aexepath`` beyond the parent come
from the stage state (the exe each ancestor pid exec'ed).
"""

from __future__ import annotations

import os
from typing import Any, Optional

from otelguard import semconv as S
from otelguard.processors.detection.fields.registry import (
    FIELDS, AttrField, Extractor, FieldType as T, as_int, define, unavailable,
)
from otelguard.processors.detection.fields.view import EventView

COMM_LEN = 15  # Falco's proc.name is the kernel comm: 15 characters
_PROC_KEYS = (S.PROCESS_EXECUTABLE_NAME, S.PROCESS_COMM, S.PROCESS_COMMAND_ARGS,
              S.PROCESS_COMMAND_LINE)
_PARENT_KEYS = (S.PROCESS_PARENT_EXECUTABLE_NAME, S.PROCESS_ANCESTORS,
                S.PROCESS_PARENT_COMMAND_LINE)


def _comm(name: Any) -> Optional[str]:
    return name[:COMM_LEN] if isinstance(name, str) and name else None


def _tokens(cmdline: Any) -> list[str]:
    return cmdline.split() if isinstance(cmdline, str) else []


def _args_list(ev: EventView) -> Optional[list[str]]:
    args = ev.attr(S.PROCESS_COMMAND_ARGS)
    if isinstance(args, list):
        return [str(a) for a in args]
    toks = _tokens(ev.attr(S.PROCESS_COMMAND_LINE))
    return toks or None


def _proc_name(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    # the kernel comm when the agent sent it: the name exec'ed (a busybox applet's link name),
    # never racing the /proc/<pid>/exe read that process.executable.name depends on
    name = ev.attr(S.PROCESS_COMM) or ev.attr(S.PROCESS_EXECUTABLE_NAME)
    if not name:
        args = _args_list(ev)
        if args:
            name = os.path.basename(args[0])
    return _comm(name)


def _proc_args(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    args = _args_list(ev)
    return None if args is None else " ".join(args[1:])


def _proc_cmdline(ev: EventView, arg: Optional[str]) -> Optional[str]:
    name = ev.field(FIELDS["proc.name"], None)
    if name is None:
        return None
    rest = _proc_args(ev, arg)
    return f"{name} {rest}" if rest else name


def _proc_env(ev: EventView, arg: Optional[str]) -> str:
    """Falco's proc.env: every variable followed by a space (so ``contains "NAME=VALUE "``
    does not match a longer value); ``proc.env[NAME]``: the value, empty when unset."""
    env = ev.attr(S.PROCESS_ENV)
    entries = [str(e) for e in env] if isinstance(env, list) else []
    if arg is None:
        return "".join(e + " " for e in entries)
    for e in entries:
        name, eq, value = e.partition("=")
        if eq and name == arg:
            return value
    return ""


def _proc_exe(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    args = _args_list(ev)
    if args:
        return args[0]
    v = ev.attr(S.PROCESS_EXECUTABLE_PATH)
    return v if isinstance(v, str) else None


def _pname(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    # the parent's comm (first ancestor, as the agent sends them) like proc.name; else its
    # executable name, else the first word of its command line
    anc = ev.attr(S.PROCESS_ANCESTORS)
    name = anc[0] if isinstance(anc, list) and anc else None
    if not name:
        name = ev.attr(S.PROCESS_PARENT_EXECUTABLE_NAME)
    if not name:
        toks = _tokens(ev.attr(S.PROCESS_PARENT_COMMAND_LINE))
        name = os.path.basename(toks[0]) if toks else None
    return _comm(name)


def _pcmdline(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    pname = ev.field(FIELDS["proc.pname"], None)
    toks = _tokens(ev.attr(S.PROCESS_PARENT_COMMAND_LINE))
    if pname is None or not toks:
        return None
    return " ".join([pname] + toks[1:])


def _pexe(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    toks = _tokens(ev.attr(S.PROCESS_PARENT_COMMAND_LINE))
    if toks:
        return toks[0]
    v = ev.attr(S.PROCESS_PARENT_EXECUTABLE_PATH)
    return v if isinstance(v, str) else None


def _ancestors(ev: EventView) -> list[str]:
    anc = ev.attr(S.PROCESS_ANCESTORS)
    names = [str(a)[:COMM_LEN] for a in anc] if isinstance(anc, list) else []
    if not names:
        p = ev.field(FIELDS["proc.pname"], None)
        names = [p] if p else []
    return names


def _aname(ev: EventView, arg: Optional[str]) -> Any:
    if arg is None:
        return tuple(_ancestors(ev)) or None
    n = int(arg)
    if n == 0:
        return ev.field(FIELDS["proc.name"], None)
    if n == 1:
        return ev.field(FIELDS["proc.pname"], None)
    anc = _ancestors(ev)
    return anc[n - 1] if n - 1 < len(anc) else None


def _apid(ev: EventView, arg: Optional[str]) -> Any:
    pids = ev.attr(S.PROCESS_ANCESTOR_PIDS)
    pids = [int(p) for p in pids] if isinstance(pids, list) else []
    if not pids:
        ppid = as_int(ev.attr(S.PROCESS_PARENT_PID))
        pids = [ppid] if ppid is not None else []
    if arg is None:
        return tuple(pids) or None
    n = int(arg)
    if n == 0:
        return as_int(ev.attr(S.PROCESS_PID))
    return pids[n - 1] if n - 1 < len(pids) else None


def _ancestor_exe(ev: EventView, n: int, path: bool) -> Any:
    """Beyond the parent, the records carry ancestor pids only: the stage state remembers the
    exe each pid exec'ed (docs/architecture.md#falco-rule-semantics); missing when unseen."""
    st = ev.state
    return None if st is None else st.ancestor_exe(ev, n, path)


def _aexepath(ev: EventView, arg: Optional[str]) -> Any:
    n = int(arg or 0)
    if n == 0:
        return ev.attr(S.PROCESS_EXECUTABLE_PATH)
    if n == 1:
        return ev.attr(S.PROCESS_PARENT_EXECUTABLE_PATH)
    return _ancestor_exe(ev, n, True)


def _aexe(ev: EventView, arg: Optional[str]) -> Any:
    n = int(arg or 0)
    if n == 0:
        return ev.field(FIELDS["proc.exe"], None)
    if n == 1:
        return ev.field(FIELDS["proc.pexe"], None)
    return _ancestor_exe(ev, n, False)


def _numeric(arg: Optional[str]) -> Optional[str]:
    return "needs a numeric index" if arg is None or not arg.isdigit() else None


def _cwd(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    v = ev.attr(S.PROCESS_WORKING_DIRECTORY)
    if not isinstance(v, str) or not v:
        return None
    return v if v.endswith("/") else v + "/"  # Falco's proc.cwd ends with '/'


def _duration(ev: EventView, _arg: Optional[str]) -> Optional[int]:
    v = as_int(ev.attr(S.PROCESS_DURATION_NS))
    if v is not None:
        return v
    created = ev.attr(S.PROCESS_CREATION_TIME)
    if isinstance(created, str) and created and ev.record.time_unix_nano:
        from datetime import datetime

        try:
            start = datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
        return max(0, ev.record.time_unix_nano - int(start * 1e9))
    return None


def _vpgid_leader(ev: EventView, _arg: Optional[str]) -> Optional[bool]:
    vpid, vpgid = as_int(ev.attr(S.PROCESS_VPID)), as_int(ev.attr(S.PROCESS_VPGID))
    return None if vpid is None or vpgid is None else vpid == vpgid


def _probe(key: Optional[str]) -> Extractor:
    """Falco marks a process as a container probe when its exe and arguments are the probe's
    exec command, and its children inherit the mark: here the record's command line or its
    parent's equals the command the pod spec gives the container. False on the host and in a
    container whose pod spec is known (the enricher sets its mounts list, even empty);
    missing when the container's metadata did not resolve."""
    def get(ev: EventView, _arg: Optional[str]) -> Optional[bool]:
        res = ev.res
        if res.get(S.HOST_PROCESS) is True:
            return False
        if not isinstance(res.get(S.K8S_CONTAINER_MOUNTS), list):
            return None
        command = res.get(key) if key is not None else None
        if not isinstance(command, list) or not command:
            return False
        want = [str(c) for c in command]
        if _args_list(ev) == want:
            return True
        return bool(ev.attr(S.PROCESS_PARENT_COMMAND_LINE) == " ".join(want))
    return get


def _caps(key: str) -> Extractor:
    def get(ev: EventView, _arg: Optional[str]) -> Optional[str]:
        v = ev.attr(key)
        if isinstance(v, list):
            return " ".join(str(c) for c in v)
        return v if isinstance(v, str) else None
    return get


define("proc.name", T.STR, f"{S.PROCESS_COMM}, else {S.PROCESS_EXECUTABLE_NAME} (15 chars)",
       _proc_name, _PROC_KEYS)
define("proc.exe", T.STR, f"{S.PROCESS_COMMAND_ARGS}[0], else {S.PROCESS_EXECUTABLE_PATH}",
       _proc_exe, (S.PROCESS_COMMAND_ARGS, S.PROCESS_EXECUTABLE_PATH))
define("proc.exepath", T.STR, S.PROCESS_EXECUTABLE_PATH, AttrField(S.PROCESS_EXECUTABLE_PATH),
       (S.PROCESS_EXECUTABLE_PATH,))
define("proc.args", T.STR, f"{S.PROCESS_COMMAND_ARGS}[1:] joined by spaces", _proc_args, _PROC_KEYS)
define("proc.cmdline", T.STR, "proc.name + ' ' + proc.args", _proc_cmdline, _PROC_KEYS)
define("proc.pname", T.STR, f"{S.PROCESS_ANCESTORS}[0] (comm), else "
       f"{S.PROCESS_PARENT_EXECUTABLE_NAME} (15 chars)", _pname, _PARENT_KEYS)
define("proc.pcmdline", T.STR, f"proc.pname + arguments of {S.PROCESS_PARENT_COMMAND_LINE}",
       _pcmdline, _PARENT_KEYS)
define("proc.pexe", T.STR, f"first word of {S.PROCESS_PARENT_COMMAND_LINE}", _pexe, _PARENT_KEYS)
define("proc.pexepath", T.STR, S.PROCESS_PARENT_EXECUTABLE_PATH,
       AttrField(S.PROCESS_PARENT_EXECUTABLE_PATH), (S.PROCESS_PARENT_EXECUTABLE_PATH,))
define("proc.aname", T.STR, f"{S.PROCESS_ANCESTORS}: [0] self, [1] parent, [N]; no index = any",
       _aname, (S.PROCESS_ANCESTORS,), arg="index")
define("proc.apid", T.NUM, f"{S.PROCESS_ANCESTOR_PIDS}: [0] self, [1] parent; no index = any",
       _apid, (S.PROCESS_ANCESTOR_PIDS,), arg="index")
define("proc.aexepath", T.STR, f"[0] proc.exepath, [1] proc.pexepath, [N] the path stage state "
       f"remembers for {S.PROCESS_ANCESTOR_PIDS}[N-1]", _aexepath,
       (S.PROCESS_PARENT_EXECUTABLE_PATH, S.PROCESS_ANCESTOR_PIDS), arg="index", arg_ok=_numeric)
define("proc.aexe", T.STR, f"[0] proc.exe, [1] proc.pexe, [N] the exe stage state remembers "
       f"for {S.PROCESS_ANCESTOR_PIDS}[N-1]", _aexe, _PARENT_KEYS + (S.PROCESS_ANCESTOR_PIDS,),
       arg="index", arg_ok=_numeric)
define("proc.pid", T.NUM, S.PROCESS_PID, AttrField(S.PROCESS_PID), (S.PROCESS_PID,))
define("proc.ppid", T.NUM, S.PROCESS_PARENT_PID, AttrField(S.PROCESS_PARENT_PID),
       (S.PROCESS_PARENT_PID,))
define("proc.vpid", T.NUM, S.PROCESS_VPID, AttrField(S.PROCESS_VPID), (S.PROCESS_VPID,))
define("thread.tid", T.NUM, f"{S.PROCESS_PID} (the agent reports processes)",
       AttrField(S.PROCESS_PID), (S.PROCESS_PID,))
define("proc.cwd", T.STR, f"{S.PROCESS_WORKING_DIRECTORY} with a trailing '/'", _cwd,
       (S.PROCESS_WORKING_DIRECTORY,))
define("proc.tty", T.NUM, S.PROCESS_TTY, AttrField(S.PROCESS_TTY), (S.PROCESS_TTY,))
define("proc.duration", T.NUM, f"{S.PROCESS_DURATION_NS}, else time - {S.PROCESS_CREATION_TIME}",
       _duration, (S.PROCESS_DURATION_NS, S.PROCESS_CREATION_TIME))
define("proc.sname", T.STR, S.PROCESS_SID_EXE_NAME, AttrField(S.PROCESS_SID_EXE_NAME),
       (S.PROCESS_SID_EXE_NAME,))
define("proc.sid", T.NUM, S.PROCESS_SESSION_LEADER_PID, AttrField(S.PROCESS_SESSION_LEADER_PID),
       (S.PROCESS_SESSION_LEADER_PID,))
define("proc.is_exe_from_memfd", T.BOOL, S.PROCESS_EXE_FROM_MEMFD,
       AttrField(S.PROCESS_EXE_FROM_MEMFD), (S.PROCESS_EXE_FROM_MEMFD,))
define("proc.is_exe_upper_layer", T.BOOL, S.PROCESS_EXE_UPPER_LAYER,
       AttrField(S.PROCESS_EXE_UPPER_LAYER), (S.PROCESS_EXE_UPPER_LAYER,))
define("proc.exe_deleted", T.BOOL, S.PROCESS_EXE_DELETED, AttrField(S.PROCESS_EXE_DELETED),
       (S.PROCESS_EXE_DELETED,))
define("proc.is_container_healthcheck", T.BOOL, "false in a container whose pod spec is known "
       "(Kubernetes has no image HEALTHCHECK) and on the host; missing otherwise",
       _probe(None), (S.K8S_CONTAINER_MOUNTS,))
define("proc.is_container_liveness_probe", T.BOOL, f"the command line (or the parent's) is "
       f"{S.K8S_CONTAINER_LIVENESS_PROBE}'s exec command", _probe(S.K8S_CONTAINER_LIVENESS_PROBE),
       (S.K8S_CONTAINER_LIVENESS_PROBE, S.PROCESS_COMMAND_ARGS))
define("proc.is_container_readiness_probe", T.BOOL, f"the command line (or the parent's) is "
       f"{S.K8S_CONTAINER_READINESS_PROBE}'s exec command",
       _probe(S.K8S_CONTAINER_READINESS_PROBE),
       (S.K8S_CONTAINER_READINESS_PROBE, S.PROCESS_COMMAND_ARGS))
define("thread.cap_effective", T.STR, f"{S.PROCESS_CAP_EFFECTIVE} joined by spaces",
       _caps(S.PROCESS_CAP_EFFECTIVE), (S.PROCESS_CAP_EFFECTIVE,))
define("thread.cap_permitted", T.STR, f"{S.PROCESS_CAP_PERMITTED} joined by spaces",
       _caps(S.PROCESS_CAP_PERMITTED), (S.PROCESS_CAP_PERMITTED,))
unavailable("thread.cap_inheritable", T.STR, "inheritable capabilities are not captured")
define("proc.env", T.STR, f"{S.PROCESS_ENV} (NAME=VALUE, each followed by a space); [NAME]: its "
       "value; only the names the agent captures (sensor.probe.env_names; "
       "docs/architecture.md#redaction), empty otherwise", _proc_env, (S.PROCESS_ENV,),
       arg="optional")
define("proc.vpgid", T.NUM, S.PROCESS_VPGID, AttrField(S.PROCESS_VPGID), (S.PROCESS_VPGID,))
define("proc.is_vpgid_leader", T.BOOL, f"{S.PROCESS_VPID} = {S.PROCESS_VPGID}", _vpgid_leader,
       (S.PROCESS_VPID, S.PROCESS_VPGID))
unavailable("proc.vpgid.name", T.STR, "the process group leader's name is not captured")
unavailable("proc.vpgid.exe", T.STR, "the process group leader's name is not captured")
unavailable("proc.ppid.duration", T.NUM, "the parent's start time is not captured")
unavailable("proc.exe_ino", T.NUM, "executable inodes are not captured")
unavailable("proc.exe_ino.ctime", T.NUM, "executable inode times are not captured")
unavailable("proc.exe_ino.mtime", T.NUM, "executable inode times are not captured")
unavailable("proc.exe_ino.ctime_duration_proc_start", T.NUM,
            "executable inode times are not captured")
unavailable("proc.is_exe_writable", T.BOOL, "executable permissions are not captured")
unavailable("proc.stdin_type", T.STR, "use proc.stdin_is_socket (otelguard extension)")
