"""Pairing of TCP state changes with the syscalls of the process that owns the connection.

``sock:inet_sock_set_state`` runs in softirq for most packets, so the task current there is
whoever happened to run, not the socket's owner. Ownership comes from two places:

- active side (connect): the kernel learns the owner where it runs in the owner's context (the
  CLOSE -> SYN_SENT change inside connect()) and stamps every later state record of that socket
  with the owner's tgid and fd (``probes/network.bpf.c``), so this tracker pairs by (tgid, fd)
  exactly, whichever of the connect record and the ESTABLISHED record arrives first (a blocking
  connect is established before its exit record, a non-blocking one after). Sockets whose
  SYN_SENT the kernel did not see (connect begun before the agent started) fall back to the
  peer address.
- passive side (accept): by the peer address and port the accept returned, again in either
  arrival order (accept() can return on another CPU before the softirq that set ESTABLISHED
  reserves its record).

Every table is bounded (LRU). Memory: ~300 bytes per open connection; cost per record: a few
dict operations.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Optional, TypeVar

from otelguard import telemetry
from otelguard.ebpf.probe import Header
from otelguard.ebpf.sockets import AF_INET, SOCK_STREAM, SockAddr, transport_of

TCP_ESTABLISHED, TCP_SYN_SENT, TCP_SYN_RECV, TCP_CLOSE = 1, 2, 3, 7
EINPROGRESS = 115


@dataclass(frozen=True)
class StateChange:
    """One decoded ``inet_sock_set_state`` record (ESTABLISHED or CLOSE)."""

    skaddr: int
    oldstate: int
    newstate: int
    local: SockAddr
    peer: SockAddr
    ktime_ns: int
    owner_tgid: int = 0  # 0: the kernel did not see the connect (passive side, or too old)
    owner_fd: int = -1


@dataclass
class Connection:
    """An established TCP connection seen by inet_sock_set_state (endpoints from the socket)."""

    skaddr: int
    local: SockAddr
    peer: SockAddr
    established_ktime: int
    owner: Optional[Header] = None  # header of the owner's connect/accept record
    fd: int = -1
    role: str = ""  # "client" | "server"


@dataclass
class _Pending:
    """A connect() or accept() whose connection has not been seen established yet."""

    owner: Header
    fd: int
    peer: SockAddr
    ret: int


K = TypeVar("K")
V = TypeVar("V")


def _lru_put(d: "OrderedDict[K, V]", key: K, value: V, cap: int) -> int:
    """Insert as most recent; evict the oldest beyond ``cap``; returns how many were evicted."""
    d[key] = value
    d.move_to_end(key)
    evicted = 0
    while len(d) > cap:
        d.popitem(last=False)
        evicted += 1
    return evicted


def copy_header(h: Header) -> Header:
    return Header.from_buffer_copy(bytes(h))


@dataclass
class ConnectionTracker:
    """User-space pairing of socket state changes with the syscalls of the owning process."""

    max_connections: int = 65536
    max_pending: int = 8192
    max_sockets: int = 16384
    established: "OrderedDict[int, Connection]" = field(default_factory=OrderedDict)
    # established, owner stamped by the kernel, its connect record not seen yet: (tgid, fd) -> sk
    unclaimed_owned: "OrderedDict[tuple[int, int], int]" = field(default_factory=OrderedDict)
    # established, owner unknown: peer (address, port) -> sockets (fallback pairing)
    unclaimed_active: "OrderedDict[tuple[str, int], list[int]]" = field(
        default_factory=OrderedDict)
    unclaimed_passive: "OrderedDict[tuple[str, int], int]" = field(default_factory=OrderedDict)
    pending: "OrderedDict[tuple[int, int], _Pending]" = field(default_factory=OrderedDict)
    pending_accepts: "OrderedDict[tuple[str, int], _Pending]" = field(
        default_factory=OrderedDict)
    sockets: "OrderedDict[tuple[int, int], tuple[int, int]]" = field(default_factory=OrderedDict)
    bound: "OrderedDict[tuple[int, int], SockAddr]" = field(default_factory=OrderedDict)
    peers: "OrderedDict[tuple[int, int], SockAddr]" = field(default_factory=OrderedDict)

    # -- bookkeeping from syscalls ---------------------------------------------------------
    def on_socket(self, pid: int, fd: int, family: int, sock_type: int) -> None:
        _lru_put(self.sockets, (pid, fd), (family, sock_type), self.max_sockets)
        self.bound.pop((pid, fd), None)
        self.peers.pop((pid, fd), None)

    def transport(self, pid: int, fd: int) -> Optional[str]:
        known = self.sockets.get((pid, fd))
        return transport_of(*known) if known is not None else None

    def on_bind(self, pid: int, fd: int, addr: SockAddr) -> None:
        _lru_put(self.bound, (pid, fd), addr, self.max_sockets)

    def on_connect(self, owner: Header, fd: int, peer: SockAddr, ret: int) -> Optional[SockAddr]:
        """Record a connect; returns the local endpoint when the connection is already known
        to be established (blocking connect: the state change came first)."""
        pid = int(owner.pid)
        _lru_put(self.peers, (pid, fd), peer, self.max_sockets)
        if ret < 0 and ret != -EINPROGRESS:
            return None
        if self.transport(pid, fd) not in (None, "tcp"):
            return None  # UDP/raw: no TCP state changes will follow
        sk = self.unclaimed_owned.pop((pid, fd), None)
        if sk is None:
            sk = self._claim_active(peer)
        conn = self.established.get(sk) if sk is not None else None
        if conn is not None:
            conn.owner, conn.fd, conn.role = copy_header(owner), fd, "client"
            return conn.local
        _lru_put(self.pending, (pid, fd), _Pending(copy_header(owner), fd, peer, ret),
                 self.max_pending)
        return None

    def on_accept(self, owner: Header, listen_fd: int, new_fd: int,
                  peer: Optional[SockAddr]) -> tuple[Optional[SockAddr], Optional[SockAddr]]:
        """Attach an accepted connection to its owner; returns (local, peer) when known."""
        pid = int(owner.pid)
        self.on_socket(pid, new_fd, peer.family if peer else AF_INET, SOCK_STREAM)
        bound = self.bound.get((pid, listen_fd))
        sk: Optional[int] = None
        if peer is not None:
            sk = self.unclaimed_passive.pop((peer.address, peer.port), None)
        elif bound is not None:
            # accept(fd, NULL, NULL): the oldest unclaimed connection on the listener's port
            for key, cand in self.unclaimed_passive.items():
                conn = self.established.get(cand)
                if conn is not None and conn.local.port == bound.port:
                    sk = cand
                    del self.unclaimed_passive[key]
                    break
        conn = self.established.get(sk) if sk is not None else None
        if conn is None:
            if peer is not None:
                _lru_put(self.peers, (pid, new_fd), peer, self.max_sockets)
                # its ESTABLISHED record may still be on the way (reserved after ours)
                _lru_put(self.pending_accepts, (peer.address, peer.port),
                         _Pending(copy_header(owner), new_fd, peer, 0), self.max_pending)
            return bound, peer
        conn.owner, conn.fd, conn.role = copy_header(owner), new_fd, "server"
        _lru_put(self.peers, (pid, new_fd), conn.peer, self.max_sockets)
        return conn.local, conn.peer

    def peer_of(self, pid: int, fd: int) -> Optional[SockAddr]:
        return self.peers.get((pid, fd))

    # -- socket state changes ----------------------------------------------------------------
    def on_established(self, ch: StateChange) -> None:
        conn = Connection(ch.skaddr, ch.local, ch.peer, ch.ktime_ns)
        if _lru_put(self.established, conn.skaddr, conn, self.max_connections):
            telemetry.dropped.labels(stage="decode", reason="connection_table_full").inc()
        key = (ch.peer.address, ch.peer.port)
        if ch.oldstate == TCP_SYN_RECV:
            acc = self.pending_accepts.pop(key, None)
            if acc is not None:
                conn.owner, conn.fd, conn.role = acc.owner, acc.fd, "server"
            else:
                _lru_put(self.unclaimed_passive, key, conn.skaddr, self.max_pending)
            return
        if ch.owner_tgid:
            pend = self.pending.pop((ch.owner_tgid, ch.owner_fd), None)
            if pend is not None:
                conn.owner, conn.fd, conn.role = pend.owner, pend.fd, "client"
            else:
                _lru_put(self.unclaimed_owned, (ch.owner_tgid, ch.owner_fd), conn.skaddr,
                         self.max_pending)
            return
        pend = self._take_pending_by_peer(ch.peer)
        if pend is not None:
            conn.owner, conn.fd, conn.role = pend.owner, pend.fd, "client"
            return
        lst = self.unclaimed_active.setdefault(key, [])
        lst.append(conn.skaddr)
        del lst[:-64]  # many owner-less connections to one peer: keep the newest
        self.unclaimed_active.move_to_end(key)
        while len(self.unclaimed_active) > self.max_pending:
            self.unclaimed_active.popitem(last=False)

    def on_close(self, ch: StateChange) -> Optional[tuple[Connection, bool]]:
        """The closed connection with its owner, or None (owner unknown / not tracked).
        The flag is True for a connection that was never established (refused / timed out
        after a non-blocking connect)."""
        sk = ch.skaddr
        conn = self.established.pop(sk, None)
        if conn is None:
            if ch.oldstate == TCP_SYN_SENT:
                pend = (self.pending.pop((ch.owner_tgid, ch.owner_fd), None) if ch.owner_tgid
                        else self._take_pending_by_peer(ch.peer, only_in_progress=True))
                if pend is not None:
                    return Connection(sk, ch.local, ch.peer, ch.ktime_ns, pend.owner,
                                      pend.fd, "client"), True
            return None
        if conn.owner is None:
            self._forget_unclaimed(conn, ch)
            return None
        return conn, False

    # -- internals -----------------------------------------------------------------------------
    def _forget_unclaimed(self, conn: Connection, ch: StateChange) -> None:
        key = (conn.peer.address, conn.peer.port)
        if self.unclaimed_passive.get(key) == conn.skaddr:
            del self.unclaimed_passive[key]
        if ch.owner_tgid and self.unclaimed_owned.get((ch.owner_tgid, ch.owner_fd)) == conn.skaddr:
            del self.unclaimed_owned[(ch.owner_tgid, ch.owner_fd)]
        lst = self.unclaimed_active.get(key)
        if lst and conn.skaddr in lst:
            lst.remove(conn.skaddr)
            if not lst:
                del self.unclaimed_active[key]

    def _claim_active(self, peer: SockAddr) -> Optional[int]:
        key = (peer.address, peer.port)
        lst = self.unclaimed_active.get(key)
        if not lst:
            return None
        pick = next((sk for sk in lst if (c := self.established.get(sk)) is not None
                     and c.owner is None), None)
        if pick is None:
            del self.unclaimed_active[key]
            return None
        lst.remove(pick)
        if not lst:
            del self.unclaimed_active[key]
        return pick

    def _take_pending_by_peer(self, peer: SockAddr,
                              only_in_progress: bool = False) -> Optional[_Pending]:
        """Fallback for sockets whose owner the kernel did not stamp: the oldest pending
        connect to the same peer."""
        for key, p in self.pending.items():
            if p.peer.port != peer.port or p.peer.address != peer.address:
                continue
            if only_in_progress and p.ret != -EINPROGRESS:
                continue
            return self.pending.pop(key)
        return None



