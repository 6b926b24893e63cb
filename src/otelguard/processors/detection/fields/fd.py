"""fd.*: the file or socket a record is about, as Falco's file-descriptor fields see it.

The fd kind (file, directory, ipv4/6, unix, packet, pipe, memfd) follows from the event name;
socket endpoints are ordered client/server by the side the record was seen on (accept, bind
and listen are the server side). For dup records the socket attributes come from the stage
state (the dup'ed socket's last record).
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any, Optional, Union

from otelguard import semconv as S
from otelguard.processors.detection.fields.evt import OPEN_TYPES, event_type, syscall_ret
from otelguard.processors.detection.fields.registry import (
    Extractor, FieldType as T, as_int, define, unavailable,
)
from otelguard.processors.detection.fields.view import MISSING, EventView

IPAddr = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
_NET_KEYS = (S.NETWORK_PEER_ADDRESS, S.NETWORK_PEER_PORT, S.NETWORK_LOCAL_ADDRESS,
             S.NETWORK_LOCAL_PORT, S.NETWORK_TRANSPORT, S.NETWORK_TYPE)


_FILE_EVENTS = frozenset({
    S.EV_FILE_OPEN, S.EV_FILE_UNLINK, S.EV_FILE_RENAME, S.EV_FILE_CHMOD, S.EV_FILE_CHOWN,
    S.EV_FILE_SYMLINK, S.EV_FILE_LINK, S.EV_FILE_MKDIR, S.EV_FILE_TRUNCATE, S.EV_MEMFD_CREATE,
})
_NET_EVENTS = frozenset({
    S.EV_NETWORK_SOCKET, S.EV_NETWORK_CONNECT, S.EV_NETWORK_ACCEPT, S.EV_NETWORK_BIND,
    S.EV_NETWORK_LISTEN, S.EV_NETWORK_CLOSE, S.EV_DNS_QUERY,
})
_SERVER_SIDE = frozenset({S.EV_NETWORK_ACCEPT, S.EV_NETWORK_BIND, S.EV_NETWORK_LISTEN})


def _fd_kind(ev: EventView) -> Optional[str]:
    """'file', 'directory', 'ipv4', 'ipv6', 'unix', 'packet', 'pipe', 'memfd' or None."""
    v = ev.cache.get("fd.kind", MISSING)
    if v is not MISSING:
        return v  # type: ignore[no-any-return]  # cache is Any: str | None
    name = ev.event_name
    kind: Optional[str] = None
    if name in _FILE_EVENTS:
        kind = "directory" if name == S.EV_FILE_MKDIR else "memfd" if name == S.EV_MEMFD_CREATE \
            else "file"
    elif name in _NET_EVENTS or (name == S.EV_DUP and ev.attr(S.DUP_OLD_FD_TYPE) == "socket"):
        kind = _net_kind(ev)
    elif name == S.EV_DUP:
        t = ev.attr(S.DUP_OLD_FD_TYPE)
        kind = {"file": "file", "pipe": "pipe", "directory": "directory"}.get(str(t))
    ev.cache["fd.kind"] = kind
    return kind


def _net(ev: EventView, key: str) -> Any:
    """A socket attribute of the record; for dup records, of the dup'ed socket (stage state)."""
    v = ev.attr(key)
    if v is None and ev.event_name == S.EV_DUP and ev.state is not None:
        v = ev.state.socket_attr(ev, key)
    return v


def _net_kind(ev: EventView) -> Optional[str]:
    fam = _net(ev, S.SOCKET_FAMILY)
    if fam == "AF_PACKET":
        return "packet"
    if fam == "AF_UNIX" or _net(ev, S.NETWORK_TRANSPORT) == "unix":
        return "unix"
    ntype = _net(ev, S.NETWORK_TYPE)
    if ntype in ("ipv4", "ipv6"):
        return str(ntype)
    if fam == "AF_INET":
        return "ipv4"
    if fam == "AF_INET6":
        return "ipv6"
    for key in (S.NETWORK_PEER_ADDRESS, S.NETWORK_LOCAL_ADDRESS):
        ip = _ip(_net(ev, key))
        if ip is not None:
            return "ipv4" if ip.version == 4 else "ipv6"
    return None


_TYPECHAR = {"file": "f", "directory": "d", "ipv4": "4", "ipv6": "6", "unix": "u",
             "packet": "p", "pipe": "p", "memfd": "m"}


def _fd_type(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    k = _fd_kind(ev)
    return None if k is None else "pipe" if k == "pipe" else k


def _fd_typechar(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    k = _fd_kind(ev)
    return None if k is None else _TYPECHAR.get(k)


def _is_net(ev: EventView) -> bool:
    return _fd_kind(ev) in ("ipv4", "ipv6")


_IPS: dict[str, Optional[IPAddr]] = {}  # parsed addresses (peers repeat); bounded, cleared


def _ip(v: Any) -> Optional[IPAddr]:
    """Parse once per distinct string: ipaddress parsing is ~20 Python calls."""
    if not isinstance(v, str) or not v:
        return None
    ip = _IPS.get(v, MISSING)
    if ip is MISSING:
        try:
            ip = ipaddress.ip_address(v.strip("[]"))
        except ValueError:
            ip = None
        if len(_IPS) >= 8192:
            _IPS.clear()
        _IPS[v] = ip
    return ip  # type: ignore[no-any-return]  # _MISSING is Any: an IP or None


def _endpoints(ev: EventView) -> tuple[Optional[IPAddr], Optional[int], Optional[IPAddr], Optional[int]]:
    """(client ip, client port, server ip, server port) of the record's socket."""
    v = ev.cache.get("fd.endpoints", MISSING)
    if v is not MISSING:
        return v  # type: ignore[no-any-return]  # cache is Any: that tuple
    peer, pport = _ip(_net(ev, S.NETWORK_PEER_ADDRESS)), as_int(_net(ev, S.NETWORK_PEER_PORT))
    local, lport = _ip(_net(ev, S.NETWORK_LOCAL_ADDRESS)), as_int(_net(ev, S.NETWORK_LOCAL_PORT))
    if ev.event_name in _SERVER_SIDE:
        out = (peer, pport, local, lport)
    else:
        out = (local, lport, peer, pport)
    ev.cache["fd.endpoints"] = out
    return out


def _local_remote(ev: EventView) -> tuple[Optional[IPAddr], Optional[int], Optional[IPAddr], Optional[int]]:
    return (_ip(_net(ev, S.NETWORK_LOCAL_ADDRESS)), as_int(_net(ev, S.NETWORK_LOCAL_PORT)),
            _ip(_net(ev, S.NETWORK_PEER_ADDRESS)), as_int(_net(ev, S.NETWORK_PEER_PORT)))


def _ep(index: int, local: bool = False) -> Extractor:
    def get(ev: EventView, _arg: Optional[str]) -> Any:
        if not _is_net(ev):
            return None
        return (_local_remote(ev) if local else _endpoints(ev))[index]
    return get


def _fd_ips(ev: EventView, _arg: Optional[str]) -> Optional[tuple[IPAddr, ...]]:
    if not _is_net(ev):
        return None
    c, _cp, s, _sp = _endpoints(ev)
    ips = tuple(ip for ip in (c, s) if ip is not None)
    return ips or None


def _fd_ip_of(index: int, local: bool = False) -> Extractor:
    def get(ev: EventView, _arg: Optional[str]) -> Optional[tuple[IPAddr, ...]]:
        if not _is_net(ev):
            return None
        ip = (_local_remote(ev) if local else _endpoints(ev))[index]
        return (ip,) if isinstance(ip, (ipaddress.IPv4Address, ipaddress.IPv6Address)) else None
    return get


def _fd_port(ev: EventView, _arg: Optional[str]) -> Optional[tuple[str, ...]]:
    if not _is_net(ev):
        return None
    _c, cp, _s, sp = _endpoints(ev)
    ports = tuple(str(p) for p in (cp, sp) if p is not None)
    return ports or None


def _fmt_ep(ip: Optional[IPAddr], port: Optional[int]) -> str:
    # libs prints IPv6 endpoints without brackets ("::1:40000->::1:80"), as fd.name has them
    host = "" if ip is None else str(ip)
    return f"{host}:{'' if port is None else port}"


def _fd_name(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    k = _fd_kind(ev)
    if k is None:
        return None
    if k in ("ipv4", "ipv6"):
        c, cp, s, sp = _endpoints(ev)
        if c is None and s is None:
            return None
        return f"{_fmt_ep(c, cp)}->{_fmt_ep(s, sp)}"
    if k == "memfd":
        name = ev.attr(S.MEMFD_NAME)
        return f"memfd:{name}" if isinstance(name, str) else None
    v = ev.attr(S.FILE_PATH)
    if v is None and k == "unix":
        v = ev.attr(S.NETWORK_PEER_ADDRESS)
    return v if isinstance(v, str) else None


def _fd_nameraw(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    raw = ev.attr(S.FILE_RAW_PATH)
    if isinstance(raw, str):
        return raw
    return _fd_name(ev, None)


def _fd_directory(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    if _fd_kind(ev) not in ("file", "directory"):
        return None
    d = ev.attr(S.FILE_DIRECTORY)
    if isinstance(d, str) and d:
        return d
    p = ev.attr(S.FILE_PATH)
    return os.path.dirname(p) or "/" if isinstance(p, str) and p else None


def _fd_filename(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    if _fd_kind(ev) not in ("file", "directory"):
        return None
    n = ev.attr(S.FILE_NAME)
    if isinstance(n, str) and n:
        return n
    p = ev.attr(S.FILE_PATH)
    return os.path.basename(p) if isinstance(p, str) and p else None


def _fd_num(ev: EventView, _arg: Optional[str]) -> Optional[int]:
    if ev.event_name == S.EV_DUP:
        return as_int(ev.attr(S.DUP_OLD_FD))
    if event_type(ev) in OPEN_TYPES or event_type(ev) in ("socket", "accept", "accept4"):
        ret = syscall_ret(ev)
        if ret is not None:
            return ret if ret >= 0 else -1
    return as_int(ev.attr(S.FILE_FD))


def _l4proto(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    k = _fd_kind(ev)
    if k not in ("ipv4", "ipv6"):
        return None
    t = _net(ev, S.NETWORK_TRANSPORT)
    if t in ("tcp", "udp", "icmp", "raw"):
        return str(t)
    st = ev.attr(S.SOCKET_TYPE)
    return {"SOCK_STREAM": "tcp", "SOCK_DGRAM": "udp", "SOCK_RAW": "raw"}.get(str(st))


def _fd_connected(ev: EventView, _arg: Optional[str]) -> Optional[bool]:
    if not _is_net(ev):
        return None
    if event_type(ev) in ("connect", "accept", "accept4"):
        ret = syscall_ret(ev)
        if ret is not None and ret >= 0:
            return True
        if ev.attr(S.ERROR_TYPE) == "EINPROGRESS":
            return True
        return None if ret is None else False  # no return value: not known connected
    return False  # the agent reports sendto/sendmsg only with an explicit destination


def _fd_name_changed(ev: EventView, _arg: Optional[str]) -> Optional[bool]:
    if not _is_net(ev):
        return None
    return event_type(ev) in ("sendto", "sendmsg") and ev.attr(S.NETWORK_PEER_ADDRESS) is not None


def _peer_dns_name(ev: EventView) -> Optional[str]:
    """A peer's cluster DNS name: server.address when it is a name, else the k8s Service."""
    server = ev.attr(S.SERVER_ADDRESS)
    if isinstance(server, str) and server and _ip(server) is None:
        return server
    svc = ev.attr(S.PEER_K8S_SERVICE_NAME)
    ns = ev.attr(S.PEER_K8S_NAMESPACE_NAME)
    if isinstance(svc, str) and svc and isinstance(ns, str) and ns:
        return f"{svc}.{ns}.svc.cluster.local"
    return None


def _sip_name(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    if not _is_net(ev) or ev.event_name in _SERVER_SIDE:
        return None
    return _peer_dns_name(ev)


def _cip_name(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    if not _is_net(ev) or ev.event_name not in _SERVER_SIDE:
        return None
    return _peer_dns_name(ev)


def _rip_name(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    return _peer_dns_name(ev) if _is_net(ev) else None


def _sockfamily(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    k = _fd_kind(ev)
    return "ip" if k in ("ipv4", "ipv6") else "unix" if k == "unix" else None


def _fd_is_server(ev: EventView, _arg: Optional[str]) -> Optional[bool]:
    return ev.event_name in _SERVER_SIDE if _is_net(ev) else None


define("fd.name", T.STR, f"{S.FILE_PATH}; sockets 'cip:cport->sip:sport' from network.*", _fd_name,
       (S.FILE_PATH,) + _NET_KEYS)
define("fd.nameraw", T.STR, f"{S.FILE_RAW_PATH}, else fd.name", _fd_nameraw,
       (S.FILE_RAW_PATH, S.FILE_PATH))
define("fd.directory", T.STR, f"{S.FILE_DIRECTORY}, else dirname of {S.FILE_PATH}", _fd_directory,
       (S.FILE_PATH,))
define("fd.filename", T.STR, f"{S.FILE_NAME}, else basename of {S.FILE_PATH}", _fd_filename,
       (S.FILE_PATH,))
define("fd.type", T.STR, "file|directory|ipv4|ipv6|unix|pipe|memfd|packet from the event kind",
       _fd_type, (S.DUP_OLD_FD_TYPE, S.NETWORK_TYPE, S.SOCKET_FAMILY))
define("fd.typechar", T.STR, "f d 4 6 u p m from fd.type", _fd_typechar,
       (S.DUP_OLD_FD_TYPE, S.NETWORK_TYPE, S.SOCKET_FAMILY))
define("fd.num", T.NUM, f"open/socket/accept: {S.SYSCALL_RET} (-1 on failure); dup: old fd; else "
       f"{S.FILE_FD}", _fd_num, (S.SYSCALL_RET, S.DUP_OLD_FD, S.FILE_FD))
define("fd.sockfamily", T.STR, "ip | unix", _sockfamily, (S.NETWORK_TYPE,))
define("fd.l4proto", T.STR, f"{S.NETWORK_TRANSPORT} (tcp|udp|icmp|raw)", _l4proto,
       (S.NETWORK_TRANSPORT,))
define("fd.cip", T.IP, "client IP: local on connect, peer on accept", _ep(0), _NET_KEYS)
define("fd.cport", T.NUM, "client port", _ep(1), _NET_KEYS)
define("fd.sip", T.IP, "server IP: peer on connect, local on accept/bind/listen", _ep(2), _NET_KEYS)
define("fd.sport", T.NUM, "server port", _ep(3), _NET_KEYS)
define("fd.lip", T.IP, S.NETWORK_LOCAL_ADDRESS, _ep(0, local=True), _NET_KEYS)
define("fd.lport", T.NUM, S.NETWORK_LOCAL_PORT, _ep(1, local=True), _NET_KEYS)
define("fd.rip", T.IP, S.NETWORK_PEER_ADDRESS, _ep(2, local=True), _NET_KEYS)
define("fd.rport", T.NUM, S.NETWORK_PEER_PORT, _ep(3, local=True), _NET_KEYS)
define("fd.ip", T.NET, "client or server IP (matches if either does)", _fd_ips, _NET_KEYS)
define("fd.port", T.MULTI, "client or server port (matches if either does)", _fd_port, _NET_KEYS)
define("fd.net", T.NET, "client or server IP in the CIDR", _fd_ips, _NET_KEYS)
define("fd.cnet", T.NET, "client IP in the CIDR", _fd_ip_of(0), _NET_KEYS)
define("fd.snet", T.NET, "server IP in the CIDR", _fd_ip_of(2), _NET_KEYS)
define("fd.lnet", T.NET, "local IP in the CIDR", _fd_ip_of(0, local=True), _NET_KEYS)
define("fd.rnet", T.NET, "remote IP in the CIDR", _fd_ip_of(2, local=True), _NET_KEYS)
define("fd.sip.name", T.STR, f"{S.SERVER_ADDRESS} when a name, else <svc>.<ns>.svc.cluster.local "
       f"from {S.PEER_K8S_SERVICE_NAME}", _sip_name,
       (S.SERVER_ADDRESS, S.PEER_K8S_SERVICE_NAME, S.PEER_K8S_NAMESPACE_NAME))
define("fd.rip.name", T.STR, "as fd.sip.name, for the remote peer", _rip_name,
       (S.SERVER_ADDRESS, S.PEER_K8S_SERVICE_NAME, S.PEER_K8S_NAMESPACE_NAME))
define("fd.cip.name", T.STR, "as fd.sip.name, for the client of an accepted connection", _cip_name,
       (S.PEER_K8S_SERVICE_NAME, S.PEER_K8S_NAMESPACE_NAME))
unavailable("fd.lip.name", T.STR, "local DNS names are not resolved")
define("fd.connected", T.BOOL, "connect/accept succeeded; false for sendto/sendmsg", _fd_connected,
       (S.SYSCALL_RET,))
define("fd.name_changed", T.BOOL, "sendto/sendmsg with an explicit destination", _fd_name_changed,
       (S.NETWORK_PEER_ADDRESS,))
define("fd.is_server", T.BOOL, "accept/bind/listen records", _fd_is_server)
unavailable("fd.types", T.LIST, "the per-process fd table is not exported", arg="optional")
unavailable("fd.ino", T.NUM, "inodes are not captured")
unavailable("fd.dev", T.NUM, "devices are not captured")
