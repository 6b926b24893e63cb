"""Socket addresses as the network probe sees them: ``struct sockaddr`` bytes copied from user
memory, and the kernel's ``/proc/<pid>/net/{tcp,udp}[6]`` tables for the rare cases where the
syscall did not name the address (listen after bind to port 0, a socket dup'ed onto stdio).

Pure functions, no state: used by the network probe's decoder and by the privilege probe (which
names the socket behind a dup2 of a shell's stdio).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from typing import Optional

AF_UNSPEC, AF_UNIX, AF_INET, AF_INET6, AF_NETLINK, AF_PACKET = 0, 1, 2, 10, 16, 17
SOCK_STREAM, SOCK_DGRAM, SOCK_RAW = 1, 2, 3


@dataclass(frozen=True)
class SockAddr:
    family: int
    address: str
    port: int

    @property
    def network_type(self) -> str:
        return "ipv6" if self.family == AF_INET6 else "ipv4"


def ipv4_text(raw: bytes) -> str:
    """Dotted decimal of 4 bytes (network order): what ``str(ipaddress.IPv4Address(raw))``
    gives, at a tenth of its cost (two per connection record). IPv6 text stays with
    ``ipaddress`` (its IPv4-mapped form differs from inet_ntop's)."""
    return socket.inet_ntop(socket.AF_INET, raw)


def decode_sockaddr(raw: bytes) -> Optional[SockAddr]:
    """A ``struct sockaddr_in``/``sockaddr_in6`` (as raw bytes) to address text and port; None
    for other families or short buffers. IPv4-mapped IPv6 addresses stay IPv6 text."""
    if len(raw) < 2:
        return None
    family = int.from_bytes(raw[0:2], "little")  # sa_family_t is host order (x86_64/arm64: LE)
    if family == AF_INET and len(raw) >= 8:
        return SockAddr(AF_INET, ipv4_text(bytes(raw[4:8])),
                        int.from_bytes(raw[2:4], "big"))
    if family == AF_INET6 and len(raw) >= 24:
        return SockAddr(AF_INET6, str(ipaddress.IPv6Address(bytes(raw[8:24]))),
                        int.from_bytes(raw[2:4], "big"))
    return None


def transport_of(family: int, sock_type: int) -> str:
    kind = sock_type & 0xF
    if family == AF_PACKET:
        return "packet"
    if kind == SOCK_RAW:
        return "raw"
    if family in (AF_INET, AF_INET6):
        return {SOCK_STREAM: "tcp", SOCK_DGRAM: "udp"}.get(kind, "unknown")
    if family == AF_UNIX:
        return "unix"
    return "unknown"


def socket_endpoints(pid: int, fd: int) -> Optional[tuple[str, SockAddr, Optional[SockAddr]]]:
    """(transport, local, remote) of inet socket ``fd`` of ``pid``, found by socket inode in
    ``/proc/<pid>/net/{tcp,tcp6,udp,udp6}``; remote is None when unconnected. For rare events
    (listen, dup of a socket onto stdio): it reads the netns's whole socket tables, ~1 ms per
    thousand sockets."""
    try:
        link = os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        return None
    if not link.startswith("socket:["):
        return None
    inode = link[8:-1]
    for name, family in (("tcp", AF_INET), ("tcp6", AF_INET6), ("udp", AF_INET),
                         ("udp6", AF_INET6)):
        try:
            with open(f"/proc/{pid}/net/{name}", encoding="ascii") as f:
                next(f, None)
                for line in f:
                    cols = line.split()
                    if len(cols) > 9 and cols[9] == inode:
                        local = _proc_net_endpoint(cols[1], family)
                        remote = _proc_net_endpoint(cols[2], family)
                        if local is None:
                            return None
                        if remote is not None and remote.port == 0:
                            remote = None
                        return name.rstrip("6"), local, remote
        except (OSError, ValueError, UnicodeDecodeError):
            continue
    return None


def socket_local_endpoint(pid: int, fd: int) -> Optional[SockAddr]:
    """The local address of socket ``fd`` of ``pid`` (see :func:`socket_endpoints`)."""
    found = socket_endpoints(pid, fd)
    return found[1] if found is not None else None


def _proc_net_endpoint(text: str, family: int) -> Optional[SockAddr]:
    """``0100007F:1F90`` (address words in host byte order, as /proc/net/tcp prints them)."""
    addr_hex, _, port_hex = text.partition(":")
    raw = bytes.fromhex(addr_hex)
    if family == AF_INET and len(raw) == 4:
        return SockAddr(AF_INET, ipv4_text(raw[::-1]), int(port_hex, 16))
    if family == AF_INET6 and len(raw) == 16:
        words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
        return SockAddr(AF_INET6, str(ipaddress.IPv6Address(words)), int(port_hex, 16))
    return None
