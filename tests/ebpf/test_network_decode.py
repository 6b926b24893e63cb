"""Network decode without the kernel: hand-built records through NetworkProbe.decode, sockaddr
decoding, render() compiling out missing tracepoints, and the connection pairing in user space."""

from __future__ import annotations

import ctypes
import ipaddress
import socket
import struct
from typing import Optional

from hypothesis import given
from hypothesis import strategies as st

from otelguard import semconv
from otelguard.ebpf import network, sockets
from otelguard.ebpf.connections import EINPROGRESS, TCP_CLOSE, TCP_ESTABLISHED, TCP_SYN_RECV, TCP_SYN_SENT
from otelguard.ebpf.dns import build_query
from otelguard.ebpf.events import Event
from otelguard.ebpf.network import AddrRecord, DnsRecord, NetworkProbe, SocketRecord, StateRecord
from otelguard.ebpf.probe import Header, ProbeConfig
from otelguard.ebpf.sockets import decode_sockaddr
from tests.support.decoding import RecordingContext, header
from tests.support.metrics import sample


def sockaddr_in(addr: str, port: int) -> bytes:
    return struct.pack("<H", socket.AF_INET) + struct.pack(">H", port) + \
        ipaddress.IPv4Address(addr).packed + b"\0" * 8


def sockaddr_in6(addr: str, port: int) -> bytes:
    return struct.pack("<H", socket.AF_INET6) + struct.pack(">H", port) + b"\0" * 4 + \
        ipaddress.IPv6Address(addr).packed + b"\0" * 4


def addr_record(type_id: int, fd: int, sa: bytes, pid: int = 100, ret: int = 0,
                aux: int = 0, ktime: int = 1_000) -> bytes:
    r = AddrRecord()
    r.h = header(type_id, pid, ret, ktime)
    r.fd, r.aux, r.sa_len = fd, aux, len(sa)
    ctypes.memmove(r.sa, sa, len(sa))
    return bytes(r)


def state_record(skaddr: int, old: int, new: int, local: tuple[str, int],
                 peer: tuple[str, int], pid: int = 0, ktime: int = 2_000,
                 owner: tuple[int, int] = (0, -1)) -> bytes:
    """``owner``: the (tgid, fd) the kernel stamped at SYN_SENT; (0, -1) when it did not."""
    r = StateRecord()
    r.h = header(network.T_STATE, pid, 0, ktime)
    r.skaddr, r.oldstate, r.newstate = skaddr, old, new
    r.owner_tgid, r.owner_fd = owner
    r.sport, r.dport, r.family, r.protocol = local[1], peer[1], socket.AF_INET, 6
    ctypes.memmove(r.saddr, ipaddress.IPv4Address(local[0]).packed, 4)
    ctypes.memmove(r.daddr, ipaddress.IPv4Address(peer[0]).packed, 4)
    return bytes(r)


def decode(probe: NetworkProbe, type_id: int, data: bytes) -> Optional[Event]:
    return probe.decode(type_id, data, RecordingContext())


def test_sockaddr_v4_v6_and_refusals() -> None:
    v4 = decode_sockaddr(sockaddr_in("10.1.2.3", 8443))
    assert v4 is not None and (v4.address, v4.port, v4.network_type) == ("10.1.2.3", 8443, "ipv4")
    v6 = decode_sockaddr(sockaddr_in6("2001:db8::1", 53))
    assert v6 is not None and (v6.address, v6.port, v6.network_type) == ("2001:db8::1", 53, "ipv6")
    mapped = decode_sockaddr(sockaddr_in6("::ffff:127.0.0.1", 80))
    assert mapped is not None and mapped.address == "::ffff:7f00:1"
    assert decode_sockaddr(b"") is None
    assert decode_sockaddr(sockaddr_in("1.2.3.4", 1)[:6]) is None  # cut inside the address
    assert decode_sockaddr(struct.pack("<H", socket.AF_UNIX) + b"/tmp/x") is None


def test_short_and_unknown_records_decode_to_none() -> None:
    p = NetworkProbe()
    full = addr_record(network.T_CONNECT, 3, sockaddr_in("1.1.1.1", 443))
    for n in (0, 10, ctypes.sizeof(Header), len(full) - 1):
        assert decode(p, network.T_CONNECT, full[:n]) is None
    assert decode(p, 59, full) is None


def test_socket_record_names_and_transport() -> None:
    p = NetworkProbe()
    r = SocketRecord()
    r.h = header(network.T_SOCKET, ret=5)
    r.family, r.type, r.protocol = socket.AF_PACKET, socket.SOCK_RAW | 0o2000000, 768
    ev = decode(p, network.T_SOCKET, bytes(r))
    assert ev is not None and ev.name == semconv.EV_NETWORK_SOCKET and ev.syscall == "socket"
    assert ev.attrs[semconv.SOCKET_FAMILY] == "AF_PACKET"
    assert ev.attrs[semconv.SOCKET_TYPE] == "SOCK_RAW"  # SOCK_CLOEXEC masked off
    assert ev.attrs[semconv.SOCKET_PROTOCOL] == 768
    assert ev.attrs[semconv.NETWORK_TRANSPORT] == "packet"
    assert ev.attrs[semconv.FILE_FD] == 5
    assert semconv.NETWORK_TYPE not in ev.attrs


def test_connect_failure_keeps_errno_and_client_role() -> None:
    p = NetworkProbe()
    ev = decode(p, network.T_CONNECT, addr_record(network.T_CONNECT, 7,
                                                  sockaddr_in6("2001:db8::7", 5432), ret=-111))
    assert ev is not None and ev.ret == -111 and ev.name == semconv.EV_NETWORK_CONNECT
    assert ev.attrs[semconv.NETWORK_PEER_ADDRESS] == "2001:db8::7"
    assert ev.attrs[semconv.SERVER_PORT] == 5432 and ev.attrs[semconv.NETWORK_TYPE] == "ipv6"
    assert semconv.CLIENT_PORT not in ev.attrs and ev.attrs[semconv.FILE_FD] == 7
    assert "Connection refused" in ev.body


def test_blocking_connect_gets_local_port_from_earlier_state_change() -> None:
    p = NetworkProbe()
    # blocking connect: the socket is ESTABLISHED before connect() returns
    assert decode(p, network.T_STATE, state_record(
        0xAA, TCP_SYN_SENT, TCP_ESTABLISHED, ("10.0.0.1", 40000),
        ("10.0.0.2", 80), ktime=5_000)) is None
    ev = decode(p, network.T_CONNECT, addr_record(network.T_CONNECT, 9,
                                                  sockaddr_in("10.0.0.2", 80), ktime=5_100))
    assert ev is not None
    assert ev.attrs[semconv.NETWORK_LOCAL_PORT] == 40000
    assert ev.attrs[semconv.CLIENT_ADDRESS] == "10.0.0.1"
    assert ev.attrs[semconv.NETWORK_TRANSPORT] == "tcp"
    close = decode(p, network.T_STATE, state_record(
        0xAA, 4, TCP_CLOSE, ("10.0.0.1", 40000), ("10.0.0.2", 80), pid=0,
        ktime=9_000))
    assert close is not None and close.name == semconv.EV_NETWORK_CLOSE
    assert close.pid == 100  # attributed to the connecting process, not softirq's pid 0
    assert close.attrs[semconv.FILE_FD] == 9
    assert close.attrs[semconv.NETWORK_PEER_PORT] == 80
    assert close.attrs[semconv.NETWORK_LOCAL_PORT] == 40000
    assert close.attrs[semconv.NETWORK_CONNECTION_DURATION_NS] == 4_000
    assert close.time_ns == 9_000


def test_nonblocking_connect_then_established_then_close() -> None:
    p = NetworkProbe()
    ev = decode(p, network.T_CONNECT, addr_record(network.T_CONNECT, 4,
                                                  sockaddr_in("192.0.2.5", 443), pid=321,
                                                  ret=-EINPROGRESS))
    assert ev is not None and ev.ret == -115
    assert decode(p, network.T_STATE, state_record(
        0xBB, TCP_SYN_SENT, TCP_ESTABLISHED, ("192.0.2.1", 50000),
        ("192.0.2.5", 443), pid=77)) is None
    close = decode(p, network.T_STATE, state_record(
        0xBB, 9, TCP_CLOSE, ("192.0.2.1", 50000), ("192.0.2.5", 443), pid=55,
        ktime=3_000))
    assert close is not None and close.pid == 321 and close.attrs[semconv.FILE_FD] == 4


def test_refused_nonblocking_connect_closes_as_never_established() -> None:
    p = NetworkProbe()
    decode(p, network.T_CONNECT, addr_record(network.T_CONNECT, 4, sockaddr_in("192.0.2.9", 1),
                                             ret=-EINPROGRESS))
    close = decode(p, network.T_STATE, state_record(
        0xCC, TCP_SYN_SENT, TCP_CLOSE, ("192.0.2.1", 50001), ("192.0.2.9", 1)))
    assert close is not None and "never established" in close.body
    assert semconv.NETWORK_CONNECTION_DURATION_NS not in close.attrs


def test_accept_pairs_with_passive_establishment() -> None:
    p = NetworkProbe()
    decode(p, network.T_STATE, state_record(
        0xDD, TCP_SYN_RECV, TCP_ESTABLISHED, ("127.0.0.1", 8080),
        ("127.0.0.1", 45678)))
    ev = decode(p, network.T_ACCEPT, addr_record(network.T_ACCEPT, 3,
                                                 sockaddr_in("127.0.0.1", 45678), ret=6,
                                                 aux=0o2000000, pid=200))
    assert ev is not None and ev.name == semconv.EV_NETWORK_ACCEPT and ev.syscall == "accept4"
    assert ev.attrs[semconv.CLIENT_PORT] == 45678 and ev.attrs[semconv.SERVER_PORT] == 8080
    assert ev.attrs[semconv.NETWORK_LOCAL_PORT] == 8080 and ev.attrs[semconv.FILE_FD] == 6
    close = decode(p, network.T_STATE, state_record(
        0xDD, 8, TCP_CLOSE, ("127.0.0.1", 8080), ("127.0.0.1", 45678)))
    assert close is not None and close.pid == 200 and close.attrs[semconv.FILE_FD] == 6
    assert close.attrs[semconv.SERVER_PORT] == 8080 and close.attrs[semconv.CLIENT_PORT] == 45678


def test_accept_without_peer_buffer_uses_the_bound_port() -> None:
    p = NetworkProbe()
    decode(p, network.T_BIND, addr_record(network.T_BIND, 3, sockaddr_in("0.0.0.0", 9000),
                                          pid=300))
    decode(p, network.T_STATE, state_record(
        0xEE, TCP_SYN_RECV, TCP_ESTABLISHED, ("10.0.0.1", 9000),
        ("10.0.0.9", 33333)))
    ev = decode(p, network.T_ACCEPT, addr_record(network.T_ACCEPT, 3, b"", ret=5, pid=300))
    assert ev is not None and ev.attrs[semconv.NETWORK_PEER_PORT] == 33333


def _owner_unknown() -> float:
    return sample("otelguard_dropped_total", stage="decode", reason="connection_owner_unknown")


def test_close_without_owner_is_counted_not_emitted() -> None:
    p = NetworkProbe()
    before = _owner_unknown()
    decode(p, network.T_STATE, state_record(
        0xF0, TCP_SYN_SENT, TCP_ESTABLISHED, ("10.0.0.1", 1), ("10.0.0.2", 2)))
    assert decode(p, network.T_STATE, state_record(
        0xF0, 4, TCP_CLOSE, ("10.0.0.1", 1), ("10.0.0.2", 2))) is None
    assert _owner_unknown() == before + 1


def test_tracker_tables_stay_bounded() -> None:
    p = NetworkProbe()
    p.tracker.max_pending = 50
    for i in range(500):
        decode(p, network.T_CONNECT, addr_record(network.T_CONNECT, 3 + i,
                                                 sockaddr_in("10.9.0.1", 1000 + i),
                                                 ret=-EINPROGRESS))
    assert len(p.tracker.pending) == 50
    # a connect on a reused fd replaces that fd's pending entry (the old socket is gone)
    decode(p, network.T_CONNECT, addr_record(network.T_CONNECT, 3 + 499,
                                             sockaddr_in("10.9.0.2", 1), ret=-EINPROGRESS))
    assert len(p.tracker.pending) == 50
    assert p.tracker.pending[(100, 502)].peer.address == "10.9.0.2"


def test_bind_and_listen() -> None:
    p = NetworkProbe()
    ev = decode(p, network.T_BIND, addr_record(network.T_BIND, 3, sockaddr_in("0.0.0.0", 8080)))
    assert ev is not None and ev.attrs[semconv.NETWORK_LOCAL_PORT] == 8080
    assert semconv.SERVER_PORT not in ev.attrs
    ev = decode(p, network.T_LISTEN, addr_record(network.T_LISTEN, 3, b"", aux=128))
    assert ev is not None and ev.name == semconv.EV_NETWORK_LISTEN
    assert ev.attrs[semconv.NETWORK_LISTEN_BACKLOG] == 128
    assert ev.attrs[semconv.SERVER_PORT] == 8080  # from the bind of the same (pid, fd)


def dns_record(payload: bytes, fd: int = 5, via: int = 0, sa: bytes = b"",
               ret: int = 0) -> bytes:
    r = DnsRecord()
    r.h = header(network.T_DNS, ret=ret)
    r.fd, r.len, r.caplen, r.via = fd, len(payload), min(len(payload), network.DNS_CAP), via
    ctypes.memmove(r.sa, sa, len(sa))
    ctypes.memmove(r.payload, payload, min(len(payload), network.DNS_CAP))
    return bytes(r)


def test_dns_record_with_destination() -> None:
    p = NetworkProbe()
    ev = decode(p, network.T_DNS, dns_record(build_query("evil.example", 16), via=1,
                                             sa=sockaddr_in("8.8.8.8", 53), ret=30))
    assert ev is not None and ev.name == semconv.EV_DNS_QUERY and ev.syscall == "sendmsg"
    assert ev.attrs[semconv.DNS_QUESTION_NAME] == "evil.example"
    assert ev.attrs[semconv.DNS_QUESTION_TYPE] == "TXT"
    assert ev.attrs[semconv.NETWORK_PEER_ADDRESS] == "8.8.8.8"
    assert ev.attrs[semconv.NETWORK_TRANSPORT] == "udp"


def test_dns_on_connected_socket_takes_peer_from_connect() -> None:
    p = NetworkProbe()
    decode(p, network.T_CONNECT, addr_record(network.T_CONNECT, 5, sockaddr_in("10.96.0.10", 53)))
    ev = decode(p, network.T_DNS, dns_record(build_query("kubernetes.default.svc", 1), via=3))
    assert ev is not None and ev.syscall == "write"
    assert ev.attrs[semconv.NETWORK_PEER_ADDRESS] == "10.96.0.10"
    assert ev.attrs[semconv.DNS_QUESTION_NAME] == "kubernetes.default.svc"


def test_non_dns_payload_to_dns_port_is_reported_without_a_name() -> None:
    p = NetworkProbe()
    ev = decode(p, network.T_DNS, dns_record(b"\x16\x03\x01 not dns at all",
                                             sa=sockaddr_in("1.2.3.4", 53)))
    assert ev is not None and semconv.DNS_QUESTION_NAME not in ev.attrs
    assert "non-DNS" in ev.body


def test_render_compiles_out_missing_tracepoints_and_sets_dns_ports() -> None:
    p = NetworkProbe()
    available = frozenset(tp for tp in p.tracepoints() if "accept4" not in tp)
    text = p.render(ProbeConfig(dns_ports=(53, 5353)), available)
    assert "#define OG_NET_HAVE_ACCEPT4 0" in text
    assert "#define OG_NET_HAVE_CONNECT 1" in text
    assert "#define OG_NET_IS_DNS_PORT(p) ((p) == 53 || (p) == 5353)" in text
    assert text.index("#define OG_NET_HAVE_") < text.index("TRACEPOINT_PROBE")
    assert p.type_ids == range(40, 60)
    assert all(t in p.type_ids for t in range(network.T_SOCKET, network.T_STATE + 1))


def test_socket_local_endpoint_from_proc() -> None:
    import os
    with socket.socket() as s4, socket.socket(socket.AF_INET6) as s6:
        s4.bind(("127.0.0.1", 0))
        s4.listen(1)
        s6.bind(("::1", 0))
        s6.listen(1)
        got4 = sockets.socket_local_endpoint(os.getpid(), s4.fileno())
        got6 = sockets.socket_local_endpoint(os.getpid(), s6.fileno())
        assert got4 == sockets.SockAddr(socket.AF_INET, "127.0.0.1", s4.getsockname()[1])
        assert got6 == sockets.SockAddr(socket.AF_INET6, "::1", s6.getsockname()[1])
    assert sockets.socket_local_endpoint(os.getpid(), 10**6) is None


def test_socket_endpoints_of_a_connected_pair_and_non_sockets() -> None:
    import os
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        with socket.create_connection(srv.getsockname()) as cli:
            got = sockets.socket_endpoints(os.getpid(), cli.fileno())
            assert got is not None
            transport, local, remote = got
            assert transport == "tcp" and local.port == cli.getsockname()[1]
            assert remote == sockets.SockAddr(socket.AF_INET, "127.0.0.1", srv.getsockname()[1])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.bind(("127.0.0.1", 0))
        got = sockets.socket_endpoints(os.getpid(), u.fileno())
        assert got is not None and got[0] == "udp" and got[2] is None
    r, w = os.pipe()
    try:
        assert sockets.socket_endpoints(os.getpid(), r) is None
    finally:
        os.close(r)
        os.close(w)


def test_scoped_sensor_does_not_count_out_of_scope_owners_as_lost() -> None:
    """With cgroup_scope, a close whose owner the kernel never stamped is a connection older
    than the agent, most likely of a task out of scope: not a loss."""
    from otelguard.ebpf.probe import ProbeConfig

    p = NetworkProbe()
    p.render(ProbeConfig(scoped=True), frozenset())
    before = _owner_unknown()
    decode(p, network.T_STATE, state_record(
        0xF2, TCP_SYN_SENT, TCP_ESTABLISHED, ("10.0.0.1", 7), ("10.0.0.2", 8)))
    assert decode(p, network.T_STATE, state_record(
        0xF2, 4, TCP_CLOSE, ("10.0.0.1", 7), ("10.0.0.2", 8))) is None
    assert _owner_unknown() == before
    p.render(ProbeConfig(), frozenset())                 # unscoped again: counted
    decode(p, network.T_STATE, state_record(
        0xF3, TCP_SYN_SENT, TCP_ESTABLISHED, ("10.0.0.1", 9), ("10.0.0.2", 8)))
    decode(p, network.T_STATE, state_record(
        0xF3, 4, TCP_CLOSE, ("10.0.0.1", 9), ("10.0.0.2", 8)))
    assert _owner_unknown() == before + 1


def test_owner_stamped_by_the_kernel_pairs_exactly_in_both_orders() -> None:
    """Two processes connect to the same peer at once; softirq runs in a third's context. The
    kernel's (tgid, fd) stamp attributes each close to its own connector, whichever of the
    connect and ESTABLISHED records comes first (peer-address pairing would swap them)."""
    p = NetworkProbe()
    peer = ("10.96.0.1", 443)
    # process 501 (fd 7): blocking connect, ESTABLISHED first
    decode(p, network.T_STATE, state_record(0x501, TCP_SYN_SENT, TCP_ESTABLISHED,
                                            ("10.0.0.5", 41000), peer, pid=999,
                                            ktime=1_000, owner=(501, 7)))
    # process 502 (fd 3): non-blocking, its connect record first, ESTABLISHED after
    c2 = decode(p, network.T_CONNECT, addr_record(network.T_CONNECT, 3, sockaddr_in(*peer),
                                                  pid=502, ret=-EINPROGRESS, ktime=1_100))
    assert c2 is not None and semconv.NETWORK_LOCAL_PORT not in c2.attrs
    c1 = decode(p, network.T_CONNECT, addr_record(network.T_CONNECT, 7, sockaddr_in(*peer),
                                                  pid=501, ktime=1_200))
    assert c1 is not None and c1.attrs[semconv.NETWORK_LOCAL_PORT] == 41000
    decode(p, network.T_STATE, state_record(0x502, TCP_SYN_SENT, TCP_ESTABLISHED,
                                            ("10.0.0.5", 42000), peer, pid=999,
                                            ktime=1_300, owner=(502, 3)))
    closes = {}
    for sk, port in ((0x502, 42000), (0x501, 41000)):
        ev = decode(p, network.T_STATE, state_record(sk, 4, TCP_CLOSE, ("10.0.0.5", port),
                                                     peer, pid=999, ktime=5_000))
        assert ev is not None
        closes[ev.pid] = ev
    assert closes[501].attrs[semconv.NETWORK_LOCAL_PORT] == 41000
    assert closes[501].attrs[semconv.FILE_FD] == 7
    assert closes[502].attrs[semconv.NETWORK_LOCAL_PORT] == 42000
    assert closes[502].attrs[semconv.FILE_FD] == 3
    assert not p.tracker.pending and not p.tracker.unclaimed_owned and not p.tracker.established


def test_owner_stamped_refused_nonblocking_connect_closes_for_its_owner() -> None:
    p = NetworkProbe()
    decode(p, network.T_CONNECT, addr_record(network.T_CONNECT, 5, sockaddr_in("192.0.2.9", 1),
                                             pid=601, ret=-EINPROGRESS))
    decode(p, network.T_CONNECT, addr_record(network.T_CONNECT, 6, sockaddr_in("192.0.2.9", 1),
                                             pid=602, ret=-EINPROGRESS))
    close = decode(p, network.T_STATE, state_record(
        0xC1, TCP_SYN_SENT, TCP_CLOSE, ("192.0.2.1", 50001), ("192.0.2.9", 1), owner=(602, 6)))
    assert close is not None and close.pid == 602 and "never established" in close.body
    assert list(p.tracker.pending) == [(601, 5)]


def test_accept_before_its_established_record_still_pairs() -> None:
    """accept() can return on another CPU before the softirq that set ESTABLISHED reserved its
    record: the accept waits for it."""
    p = NetworkProbe()
    decode(p, network.T_BIND, addr_record(network.T_BIND, 3, sockaddr_in("127.0.0.1", 8080),
                                          pid=200))
    ev = decode(p, network.T_ACCEPT, addr_record(network.T_ACCEPT, 3,
                                                 sockaddr_in("127.0.0.1", 45678), ret=6,
                                                 pid=200))
    assert ev is not None and ev.attrs[semconv.SERVER_PORT] == 8080
    decode(p, network.T_STATE, state_record(
        0xDE, TCP_SYN_RECV, TCP_ESTABLISHED, ("127.0.0.1", 8080), ("127.0.0.1", 45678),
        ktime=1_000))
    close = decode(p, network.T_STATE, state_record(
        0xDE, 8, TCP_CLOSE, ("127.0.0.1", 8080), ("127.0.0.1", 45678), ktime=4_000))
    assert close is not None and close.pid == 200 and close.attrs[semconv.FILE_FD] == 6
    assert close.attrs[semconv.NETWORK_CONNECTION_DURATION_NS] == 3_000
    assert not p.tracker.pending_accepts and not p.tracker.unclaimed_passive


@given(st.binary(min_size=4, max_size=4))
def test_ipv4_text_is_what_ipaddress_prints(raw: bytes) -> None:
    from otelguard.ebpf.sockets import ipv4_text

    assert ipv4_text(raw) == str(ipaddress.IPv4Address(raw))
