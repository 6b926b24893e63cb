"""The benign workloads and the attacker's steps, as one script the containers run.

Not imported by the tests: workloads.py copies it into the session's directory and runs
``<tini> <tini.py> <python> <this file> ROLE`` in a fake kubepods container. Its argv is the
same for every run of a role (steps come in ``OGP_STEPS``, the configuration in ``OGP``), so the
process entries a profile learns do not change with what a run does. Each step prints
``{"step": NAME, "at": time.time()}`` right before its action: the tests measure the time to
detection from there.

Roles: ``web`` (an HTTP service: a listener, a forked worker that answers and logs each request,
a client, a database peer, uploads, a gzip of its log) and ``resolver`` (an interpreter app
doing DNS lookups and a database call). Only loopback is used; DNS queries go to 127.0.0.1:53
as the sensor tests send them (no server needed: the query is the record).
"""

import ctypes
import json
import os
import socket
import struct
import subprocess
import sys
import time

C = json.loads(os.environ["OGP"])
ROLE = sys.argv[1]
STEPS = [s for s in os.environ.get("OGP_STEPS", "").split(",") if s]
DATA = C["data"]
LOG = f"{DATA}/web/access.log"
libc = ctypes.CDLL(None, use_errno=True)


def mark(name: str) -> None:
    print(json.dumps({"step": name, "at": time.time()}), flush=True)


def query(name: str) -> bytes:
    header = struct.pack(">HHHHHH", int.from_bytes(os.urandom(2), "big"), 0x0100, 1, 0, 0, 0)
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split("."))
    return header + labels + b"\x00" + struct.pack(">HH", 1, 1)


def dns(*names: str) -> None:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for name in names:
        u.sendto(query(name), ("127.0.0.1", 53))
    u.close()


def call(host: str, port: int) -> None:
    s = socket.create_connection((host, port), timeout=5)
    s.sendall(b"ping\n")
    s.close()


def web() -> None:
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", C["web_port"]))
    srv.listen(8)
    worker = os.fork()
    if worker == 0:  # the worker: answers the requests and logs each
        for _ in range(2):
            conn, _ = srv.accept()
            line = conn.recv(1024).split(b"\r\n")[0]
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
            conn.close()
            with open(LOG, "a") as f:
                f.write(f"{time.time():.3f} {line.decode()} 200\n")
        os._exit(0)
    for _ in range(2):
        c = socket.create_connection(("127.0.0.1", C["web_port"]), timeout=5)
        c.sendall(b"GET /health HTTP/1.0\r\n\r\n")
        c.recv(256)
        c.close()
    os.waitpid(worker, 0)
    srv.close()
    call("127.0.0.1", C["db_port"])
    for _ in range(3):
        with open(f"{DATA}/web/uploads/{os.urandom(6).hex()}", "w") as f:
            f.write("upload")
    subprocess.run(["/usr/bin/gzip", "-c", LOG], stdout=subprocess.DEVNULL, check=True)


def resolver() -> None:
    dns("db.shop.svc.cluster.local", "api.payments.example")
    call("127.0.0.1", C["db_port"])


def run(argv: list, **kw: object) -> None:
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)


def memfd_exec() -> None:
    fd = os.memfd_create("payload", os.MFD_CLOEXEC)
    with open("/bin/sleep", "rb") as f:
        os.write(fd, f.read())
    pid = os.fork()
    if pid == 0:
        os.execve(fd, ["payload", "0.3"], {})
    os.waitpid(pid, 0)


def unshare_uts() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0 if libc.unshare(0x04000000) == 0 else 1)  # CLONE_NEWUTS: CAP_SYS_ADMIN
    os.waitpid(pid, 0)


def listen_on(port: int) -> None:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(1)
    s.close()


def overlay_exec() -> None:
    """Drop a binary into the writable layer of an overlayfs root and run it (last step: the
    process moves into its own root)."""
    sys.argv = ["overlay", f"{DATA}/overlay-{os.getpid()}"]
    with open(f"{DATA}/overlay.py") as f:
        code = f.read()
    exec(compile(code, "overlay", "exec"), {"__name__": "overlay"})


STEP_ACTIONS = {
    # deviations
    "new_binary": lambda: run(["/usr/bin/id"]),
    "shell": lambda: run(["/bin/sh", "-c", "true"]),
    "egress_new_ip": lambda: call("127.0.0.9", C["db_port"]),
    "egress_new_port": lambda: call("127.0.0.1", C["alt_port"]),
    "egress_outside": lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).connect(
        ("203.0.113.7", 443)),  # UDP connect: no packet leaves
    "listen_new_port": lambda: listen_on(C["new_port"]),
    "cap_net_raw": lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW,
                                         socket.IPPROTO_ICMP).close(),
    "cap_sys_admin": unshare_uts,
    "write_etc": lambda: os.close(os.open("/etc/hosts", os.O_WRONLY | os.O_APPEND)),
    "write_new_dir": lambda: open(f"{DATA}/web/drop/{os.getpid()}", "w").close(),
    "memfd_exec": memfd_exec,
    "network_tool": lambda: run(["/usr/bin/curl", "-s", "-m", "1", "-o", "/dev/null",
                                 f"http://127.0.0.1:{C['alt_port']}/"]),
    "package_manager": lambda: run(["/usr/bin/dpkg", "--version"]),
    "sa_token_read": lambda: open(C["token"], "rb").read(),
    "shadow_read": lambda: open("/etc/shadow", "rb").read(1),
    "dns_new_name": lambda: dns("exfil.attacker.example"),
    "dns_new_sibling": lambda: dns("vault.shop.svc.cluster.local"),
    "overlay_exec": overlay_exec,
    # near misses: the same binary, another argv that has the learned shape; a learned name
    # spelt differently; a learned peer and port
    "gzip_other_path": lambda: run(["/usr/bin/gzip", "-c", "/etc/hostname"]),
    "dns_learned_spelling": lambda: dns("DB.Shop.svc.cluster.local."),
    "db_again": lambda: call("127.0.0.1", C["db_port"]),
    # poisoning
    "c2_kofn": lambda: call("127.0.0.66", C["db_port"]),
    "dns_burst": lambda: dns("staging.burst.example"),
    "taint_then_c2": lambda: (open("/etc/shadow", "rb").read(1),
                              call("127.0.0.77", C["db_port"])),
    "junk_flood": lambda: [open(f"{DATA}/junk/{i}/f", "w").close()
                           for i in range(C["junk"])],
    "decoy": lambda: [dns("decoy.attacker.example") for _ in range(12)],
    "c2_after_decoy": lambda: call("127.0.0.68", C["db_port"]),
}


def main() -> None:
    {"web": web, "resolver": resolver}[ROLE]()
    for step in STEPS:
        mark(step)
        STEP_ACTIONS[step]()
        time.sleep(0.05)


if __name__ == "__main__":
    main()
