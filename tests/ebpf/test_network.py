"""Network probe against the real kernel: a child in a kubepods-shaped cgroup makes real
connections, sockets and DNS sends; the session sensor must report each exactly."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import pytest

from otelguard import semconv
from otelguard.ebpf.events import Event
from otelguard.ebpf.sensor import Sensor
from otelguard.ebpf.settings import SensorConfig
from tests.ebpf.capture import SRC, collect, exited, flush, in_container, named, run_workload
from tests.ebpf.containers import container
from tests.support.prerequisites import missing, require_root


pytestmark = pytest.mark.kernel

WORKLOAD = r'''
import ctypes, json, os, socket, struct, time
from otelguard.ebpf.dns import build_query

out = {}
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.bind(("127.0.0.1", 0))
srv.listen(7)
out["server_port"] = srv.getsockname()[1]
out["listen_fd"] = srv.fileno()

cli = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
cli.connect(("127.0.0.1", out["server_port"]))
conn, peer = srv.accept()
out["client_port"] = cli.getsockname()[1]
out["client_fd"] = cli.fileno()
out["accepted_fd"] = conn.fileno()
time.sleep(0.05)                      # a connection that lives a measurable time
cli.close(); conn.close()

# IPv6 loopback
s6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s6.bind(("::1", 0)); s6.listen(1)
out["v6_port"] = s6.getsockname()[1]
c6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
c6.connect(("::1", out["v6_port"])); a6, _ = s6.accept()
out["v6_client_port"] = c6.getsockname()[1]
c6.close(); a6.close(); s6.close()

# a port nobody listens on: bind then close to learn a free one
tmp = socket.socket(); tmp.bind(("127.0.0.1", 0)); out["refused_port"] = tmp.getsockname()[1]; tmp.close()
r = socket.socket()
try:
    r.connect(("127.0.0.1", out["refused_port"]))
except ConnectionRefusedError:
    out["refused"] = True
r.close()

pk = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003)); out["packet_fd"] = pk.fileno(); pk.close()
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); out["raw_fd"] = raw.fileno(); raw.close()
un = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); un.close()   # must not be reported

# DNS: connected socket (send -> sendto with no address, then write), unconnected sendto,
# sendmsg with a name, and sendmmsg with two messages (as glibc sends A + AAAA)
d = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
d.connect(("127.0.0.1", 53))
d.send(build_query("connected.otelguard.test", 1))
time.sleep(0.05)
try:   # nobody answers on :53, so the ICMP error may fail this send: still an attempt
    os.write(d.fileno(), build_query("write.otelguard.test", 28))
except ConnectionRefusedError:
    out["write_refused"] = True
d.close()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.sendto(build_query("sendto.otelguard.test", 16), ("127.0.0.1", 53))
u.sendmsg([build_query("sendmsg.otelguard.test", 1)], [], 0, ("127.0.0.1", 53))
u.sendto(b"not dns at all", ("127.0.0.1", 9))          # another port: must not be reported

class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
class msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.POINTER(iovec)),
                ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]
class mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", msghdr), ("len", ctypes.c_uint32)]
libc = ctypes.CDLL(None, use_errno=True)
sa = struct.pack("<H", socket.AF_INET) + struct.pack(">H", 53) + socket.inet_aton("127.0.0.1") + b"\0" * 8
sabuf = ctypes.create_string_buffer(sa, len(sa))
bufs = [ctypes.create_string_buffer(build_query(n, t)) for n, t in (("mmsg-a.otelguard.test", 1), ("mmsg-aaaa.otelguard.test", 28))]
iovs = [iovec(ctypes.cast(b, ctypes.c_void_p), len(b.raw) - 1) for b in bufs]
msgs = (mmsghdr * 2)()
for i in range(2):
    msgs[i].hdr.name = ctypes.cast(sabuf, ctypes.c_void_p); msgs[i].hdr.namelen = len(sa)
    msgs[i].hdr.iov = ctypes.pointer(iovs[i]); msgs[i].hdr.iovlen = 1
out["sendmmsg"] = libc.sendmmsg(u.fileno(), msgs, 2, 0)
out["dns_fd"] = u.fileno()
u.close()
# alive (srv still open) while the sensor decodes: a listen's port is read from /proc at decode
# (docs/architecture.md#kernel-facts), which a loaded machine can delay past 0.2 s
time.sleep(2.0)
print(json.dumps(out))
'''


@pytest.fixture(scope="module")
def net_run(sensor: Sensor) -> tuple[dict[str, int], list[Event]]:
    out, pid, events = run_workload(sensor, WORKLOAD)
    return json.loads(out), [e for e in events if e.pid == pid]


def test_connect_success_with_peer_and_container(net_run: tuple[dict[str, int], list[Event]]) -> None:
    info, events = net_run
    ok = [e for e in named(events, semconv.EV_NETWORK_CONNECT)
          if e.attrs.get(semconv.NETWORK_PEER_PORT) == info["server_port"]]
    assert len(ok) == 1, [e.body for e in named(events, semconv.EV_NETWORK_CONNECT)]
    ev = ok[0]
    assert ev.ret == 0 and ev.syscall == "connect" and ev.container_id
    assert ev.attrs[semconv.NETWORK_PEER_ADDRESS] == "127.0.0.1"
    assert ev.attrs[semconv.SERVER_PORT] == info["server_port"]
    assert ev.attrs[semconv.NETWORK_LOCAL_PORT] == info["client_port"]
    assert ev.attrs[semconv.NETWORK_TRANSPORT] == "tcp"
    assert ev.attrs[semconv.NETWORK_TYPE] == "ipv4"
    assert ev.attrs[semconv.FILE_FD] == info["client_fd"]


def test_ipv6_connect_and_accept(net_run: tuple[dict[str, int], list[Event]]) -> None:
    info, events = net_run
    con = [e for e in named(events, semconv.EV_NETWORK_CONNECT)
           if e.attrs.get(semconv.NETWORK_PEER_PORT) == info["v6_port"]]
    assert len(con) == 1 and con[0].ret == 0
    assert con[0].attrs[semconv.NETWORK_PEER_ADDRESS] == "::1"
    assert con[0].attrs[semconv.NETWORK_TYPE] == "ipv6"
    assert con[0].attrs[semconv.NETWORK_LOCAL_PORT] == info["v6_client_port"]
    acc = [e for e in named(events, semconv.EV_NETWORK_ACCEPT)
           if e.attrs.get(semconv.NETWORK_PEER_PORT) == info["v6_client_port"]]
    assert len(acc) == 1 and acc[0].attrs[semconv.SERVER_PORT] == info["v6_port"]


def test_connect_refused_reports_errno(net_run: tuple[dict[str, int], list[Event]]) -> None:
    info, events = net_run
    assert info.get("refused")
    bad = [e for e in named(events, semconv.EV_NETWORK_CONNECT)
           if e.attrs.get(semconv.NETWORK_PEER_PORT) == info["refused_port"]]
    assert len(bad) == 1 and bad[0].ret == -errno.ECONNREFUSED
    assert bad[0].attrs.get(semconv.ERROR_TYPE) == "ECONNREFUSED"


def test_accept_reports_the_clients_port(net_run: tuple[dict[str, int], list[Event]]) -> None:
    info, events = net_run
    acc = [e for e in named(events, semconv.EV_NETWORK_ACCEPT)
           if e.attrs.get(semconv.NETWORK_PEER_PORT) == info["client_port"]]
    assert len(acc) == 1
    ev = acc[0]
    assert ev.ret == info["accepted_fd"] and ev.attrs[semconv.FILE_FD] == info["accepted_fd"]
    assert ev.attrs[semconv.NETWORK_PEER_PORT] == info["client_port"]
    assert ev.attrs[semconv.CLIENT_PORT] == info["client_port"]
    assert ev.attrs[semconv.SERVER_PORT] == info["server_port"]


def test_bind_and_listen(net_run: tuple[dict[str, int], list[Event]]) -> None:
    info, events = net_run
    binds = [e for e in named(events, semconv.EV_NETWORK_BIND)
             if e.attrs.get(semconv.FILE_FD) == info["listen_fd"]]
    assert binds and binds[0].attrs[semconv.NETWORK_LOCAL_ADDRESS] == "127.0.0.1"
    assert binds[0].ret == 0
    listens = [e for e in named(events, semconv.EV_NETWORK_LISTEN)
               if e.attrs[semconv.FILE_FD] == info["listen_fd"]]
    assert len(listens) == 1 and listens[0].attrs[semconv.NETWORK_LISTEN_BACKLOG] == 7
    # bound to port 0: the port the kernel picked, read from /proc at decode time
    assert listens[0].attrs[semconv.SERVER_PORT] == info["server_port"]
    assert listens[0].attrs[semconv.NETWORK_LOCAL_ADDRESS] == "127.0.0.1"
    assert listens[0].attrs[semconv.FILE_FD] == info["listen_fd"]


def test_packet_and_raw_sockets_but_not_unix(net_run: tuple[dict[str, int], list[Event]]) -> None:
    _, events = net_run
    socks = named(events, semconv.EV_NETWORK_SOCKET)
    fams = [(e.attrs[semconv.SOCKET_FAMILY], e.attrs[semconv.SOCKET_TYPE],
             e.attrs[semconv.NETWORK_TRANSPORT]) for e in socks]
    assert ("AF_PACKET", "SOCK_RAW", "packet") in fams
    assert ("AF_INET", "SOCK_RAW", "raw") in fams
    assert ("AF_INET", "SOCK_STREAM", "tcp") in fams
    assert ("AF_INET", "SOCK_DGRAM", "udp") in fams
    assert not [f for f in fams if f[0] in ("AF_UNIX", "AF_NETLINK")]
    pk = next(e for e in socks if e.attrs[semconv.SOCKET_FAMILY] == "AF_PACKET")
    assert pk.attrs[semconv.SOCKET_PROTOCOL] == 0x0300  # htons(ETH_P_ALL) as passed
    assert pk.ret >= 0


def test_dns_names_exact_for_every_send_path(net_run: tuple[dict[str, int], list[Event]]) -> None:
    info, events = net_run
    assert info["sendmmsg"] == 2
    got = {(e.attrs.get(semconv.DNS_QUESTION_NAME), e.attrs.get(semconv.DNS_QUESTION_TYPE),
            e.syscall) for e in named(events, semconv.EV_DNS_QUERY)}
    assert got == {
        ("connected.otelguard.test", "A", "sendto"),
        ("write.otelguard.test", "AAAA", "write"),
        ("sendto.otelguard.test", "TXT", "sendto"),
        ("sendmsg.otelguard.test", "A", "sendmsg"),
        ("mmsg-a.otelguard.test", "A", "sendmmsg"),
        ("mmsg-aaaa.otelguard.test", "AAAA", "sendmmsg"),
    }
    for e in named(events, semconv.EV_DNS_QUERY):
        assert e.attrs[semconv.NETWORK_PEER_ADDRESS] == "127.0.0.1"
        assert e.attrs[semconv.NETWORK_PEER_PORT] == 53
        assert e.attrs[semconv.NETWORK_TRANSPORT] == "udp"


def test_established_and_close_pair_up(net_run: tuple[dict[str, int], list[Event]]) -> None:
    info, events = net_run
    closes = named(events, semconv.EV_NETWORK_CLOSE)
    tuples = {(e.attrs[semconv.NETWORK_LOCAL_PORT], e.attrs[semconv.NETWORK_PEER_PORT]): e
              for e in closes}
    client = tuples.get((info["client_port"], info["server_port"]))
    server = tuples.get((info["server_port"], info["client_port"]))
    assert client is not None and server is not None, [e.body for e in closes]
    assert client.attrs[semconv.FILE_FD] == info["client_fd"]
    assert server.attrs[semconv.FILE_FD] == info["accepted_fd"]
    connect = next(e for e in named(events, semconv.EV_NETWORK_CONNECT)
                   if e.attrs.get(semconv.NETWORK_PEER_PORT) == info["server_port"])
    accept = next(e for e in named(events, semconv.EV_NETWORK_ACCEPT)
                  if e.attrs.get(semconv.NETWORK_PEER_PORT) == info["client_port"])
    assert client.time_ns - connect.time_ns > 40_000_000  # the 50 ms sleep, kernel clock
    assert server.time_ns - accept.time_ns > 40_000_000
    for e in (client, server):
        assert e.attrs[semconv.NETWORK_CONNECTION_DURATION_NS] > 40_000_000
        assert e.container_id == connect.container_id


def test_exporter_builds_closed_connection_spans(
        net_run: tuple[dict[str, int], list[Event]]) -> None:
    """The contract with exporter/spans.py: connect/accept open a CLIENT/SERVER span, our
    EV_NETWORK_CLOSE (matched on peer address/port + local port) ends it."""
    from otelguard.exporter.spans import KIND_CLIENT, KIND_SERVER, SpanTracker

    info, events = net_run
    tracker = SpanTracker()
    for ev in events:
        tracker.observe(ev)
    spans = tracker.take_finished()
    conns = {(s.kind, s.attrs.get(semconv.NETWORK_PEER_PORT)): s for s in spans
             if s.kind in (KIND_CLIENT, KIND_SERVER)}
    client = conns[(KIND_CLIENT, info["server_port"])]
    server = conns[(KIND_SERVER, info["client_port"])]
    for span in (client, server):
        assert span.attrs[semconv.SPAN_END_REASON] == "close"
        assert span.end_ns - span.start_ns > 40_000_000
    assert client.status_code == 0
    refused = conns[(KIND_CLIENT, info["refused_port"])]
    assert refused.status_code == 2 and refused.status_message == "ECONNREFUSED"


GLIBC_RESOLVER = r'''
import os, subprocess, tempfile, ctypes
libc = ctypes.CDLL(None, use_errno=True)
# a private mount namespace whose resolv.conf points at 127.0.0.1 (nothing answers there)
assert libc.unshare(0x00020000) == 0
assert libc.mount(b"none", b"/", None, (1 << 14) | (1 << 18), None) == 0
conf = tempfile.NamedTemporaryFile("w", delete=False)
conf.write("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"); conf.close()
assert libc.mount(conf.name.encode(), b"/etc/resolv.conf", None, 4096, None) == 0   # MS_BIND
p = subprocess.run(["getent", "ahosts", "glibc.otelguard.test."], capture_output=True)
os.unlink(conf.name)
print(p.returncode)
'''


def test_real_glibc_resolver_queries(sensor: Sensor) -> None:
    """glibc's stub resolver: connect() to :53, sendmmsg of A + AAAA (maybe resent one by one)."""
    if not os.path.exists("/usr/bin/getent"):
        missing("/usr/bin/getent (glibc's resolver front end) is not installed: apt-get install libc-bin")
    _out, _pid, events = run_workload(sensor, GLIBC_RESOLVER, timeout_s=30)
    queries = named(events, semconv.EV_DNS_QUERY)
    got = {(e.attrs.get(semconv.DNS_QUESTION_NAME), e.attrs.get(semconv.DNS_QUESTION_TYPE))
           for e in queries}
    assert got == {("glibc.otelguard.test", "A"), ("glibc.otelguard.test", "AAAA")}, \
        [e.body for e in queries]
    assert any(e.syscall == "sendmmsg" for e in queries)
    getent = {e.pid for e in queries}
    assert len(getent) == 1 and all(e.attrs[semconv.NETWORK_PEER_PORT] == 53 for e in queries)


CHURN = r'''
import socket, sys, threading
n = int(sys.argv[1])
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(128)
print(srv.getsockname()[1], flush=True)
sys.stdin.readline()                       # wait until told to start
def serve():
    for _ in range(n):
        c, _ = srv.accept(); c.close()
t = threading.Thread(target=serve); t.start()
for _ in range(n):
    s = socket.socket(); s.connect(srv.getsockname()); s.recv(1); s.close()
t.join()
print("done", flush=True)
'''


def _churn(n: int) -> subprocess.Popen[str]:
    """A host process (out of every test scope, not the agent) that listens on loopback, then
    on a line on stdin makes and closes ``n`` connections to itself."""
    p = subprocess.Popen([sys.executable, "-c", CHURN, str(n)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip().isdigit()
    return p


def _run_churn(p: subprocess.Popen[str]) -> None:
    assert p.stdin is not None and p.stdout is not None
    p.stdin.write("go\n")
    p.stdin.flush()
    assert p.stdout.readline().strip() == "done"
    assert p.wait(timeout=60) == 0


def _churn_under(sensor: Sensor, churn: subprocess.Popen[str]) -> tuple[int, int, list[Event]]:
    """Run the churn beside the in-scope workload; (records sent, kernel drops, the workload's
    events). The churn's connections are all unwatched, so none of them should be sent."""
    before = sensor.stats()
    flush(sensor)
    with container() as c:
        _run_churn(churn)
        with c.popen([sys.executable, "-c", WORKLOAD], stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": SRC}) as p:
            out, err = p.communicate(timeout=30)
        assert p.returncode == 0, err.decode()
        events = collect(sensor, in_container(c.container_id), exited(p.pid), 20)
    after = sensor.stats()
    info = json.loads(out)
    closes = {(e.attrs[semconv.NETWORK_LOCAL_PORT], e.attrs[semconv.NETWORK_PEER_PORT])
              for e in named(events, semconv.EV_NETWORK_CLOSE) if e.pid == p.pid}
    assert (info["client_port"], info["server_port"]) in closes, closes
    assert (info["server_port"], info["client_port"]) in closes, closes
    return (after["records"] - before["records"],
            after["kernel_drops"] - before["kernel_drops"], events)


CHURN_CONNECTIONS = 3000


def test_unwatched_connection_churn_stays_in_the_kernel(sensor: Sensor) -> None:
    """Regression (a full-suite failure): the state tracepoint runs in softirq and sees every
    host socket, so the loopback churn of other processes (the e2e stack) used to flood the
    ring buffer with four records per connection and the workload's own ESTABLISHED/CLOSE
    records were dropped. The kernel now knows the owners (SYN_SENT inside connect(), LISTEN
    inside listen()) and sends nothing for unwatched ones."""
    churn = _churn(CHURN_CONNECTIONS)       # listens after the sensor started
    sent, drops, _ = _churn_under(sensor, churn)
    assert drops == 0
    # the workload itself sends ~70 records; the churn would add 4 per connection
    assert sent < 400, sent


def test_listener_older_than_the_agent_is_learnt_from_its_closes() -> None:
    """A listener that predates the agent (its LISTEN change was never seen): the first close
    of an accepted connection, run in the owner's context, teaches that the port is
    unwatched; the rest of the churn stays in the kernel."""
    from tests.support.sensor import SCOPE

    require_root()

    churn = _churn(CHURN_CONNECTIONS)       # listening before this sensor exists
    with Sensor(SensorConfig(cgroup_scope=SCOPE)) as fresh:
        sent, drops, _ = _churn_under(fresh, churn)
    assert drops == 0
    assert sent < 400, sent
