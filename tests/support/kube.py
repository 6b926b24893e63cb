"""A real control plane on 127.0.0.1 for tests and the local stack: Debian's etcd + kube-apiserver.

There is no kubelet or controller-manager: objects are created directly through the API (the test
plays the controllers' part), which is all the enricher needs. Everything lives in one work
directory (certificates, tokens, etcd data, logs) and on random loopback ports.

Usage::

    cluster = start_cluster(Path(tmp))     # waits for /readyz; raises with the log tail if not
    cluster.kubeconfig                     # admin kubeconfig (token auth, system:masters)
    cluster.kubeconfig_for_token(token)    # same server, another identity
    cluster.restart_apiserver()            # same etcd, same port: for reconnect tests
    cluster.stop()

``python -m tests.support.kube DIR`` starts one and prints its kubeconfig path until interrupted
(the stack's start script may call :func:`start_cluster` instead).

Authorization is RBAC; the admin token's user is in ``system:masters`` (allowed everything), so
a restricted identity (a ServiceAccount token from the TokenRequest API) proves a Role suffices.
Cost: ~3-8 s to start on 2 busy cores, ~150 MB RSS for both processes.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import yaml

from tests.support.polling import wait_until
from tests.support.endpoints import free_port

CACHE = Path(os.environ.get("OTELGUARD_CACHE", Path.home() / ".cache" / "otelguard"))
ETCD = os.environ.get("OTELGUARD_ETCD", "/usr/bin/etcd")


def apiserver_binary() -> Path:
    """The kube-apiserver built by ``scripts/stack/build.sh kubernetes``."""
    return Path(os.environ.get("OTELGUARD_KUBE_APISERVER", CACHE / "kubernetes" / "kube-apiserver"))




def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certs(d: Path) -> None:
    """A CA, a serving cert for 127.0.0.1/localhost signed by it, and a service-account key pair."""
    d.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
             "-days", "2", "-subj", "/CN=otelguard-test-ca", cwd=d)
    (d / "san.cnf").write_text(
        "[req]\ndistinguished_name=dn\n[dn]\n[ext]\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\n"
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
    )
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=kube-apiserver", cwd=d)
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "san.cnf",
             "-extensions", "ext", cwd=d)
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=d)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)


@dataclass
class KubeCluster:
    """A running etcd + kube-apiserver pair; ``stop()`` kills both and leaves the directory."""

    workdir: Path
    etcd_port: int
    etcd_peer_port: int
    port: int
    admin_token: str
    apiserver_bin: Path
    extra_args: tuple[str, ...] = ()
    etcd_proc: Optional[subprocess.Popen[bytes]] = None
    apiserver_proc: Optional[subprocess.Popen[bytes]] = None
    _logs: list[object] = field(default_factory=list)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        return self.workdir / "pki" / "ca.crt"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.etcd_port}"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    def kubeconfig_for_token(self, token: str, name: str, server: Optional[str] = None) -> Path:
        """A kubeconfig for another identity (e.g. a ServiceAccount token), optionally through
        another address (a relay in front of the API server)."""
        path = self.workdir / f"{name}.kubeconfig"
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": name,
            "clusters": [{"name": "test", "cluster": {
                "server": server or self.server, "certificate-authority": str(self.ca_file)}}],
            "users": [{"name": name, "user": {"token": token}}],
            "contexts": [{"name": name, "context": {"cluster": "test", "user": name}}],
        }))
        path.chmod(0o600)
        return path

    # -- processes --

    def _log(self, name: str) -> object:
        f = open(self.workdir / f"{name}.log", "ab")
        self._logs.append(f)
        return f

    def start_etcd(self) -> None:
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        self.etcd_proc = subprocess.Popen(
            [ETCD, "--name", "test", "--data-dir", str(self.workdir / "etcd"),
             "--listen-client-urls", self.etcd_url, "--advertise-client-urls", self.etcd_url,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", f"test={peer}", "--log-level", "warn"],
            stdout=self._log("etcd"), stderr=subprocess.STDOUT,  # type: ignore[arg-type]
            start_new_session=True,
        )
        _wait(lambda: _http_ok(f"{self.etcd_url}/health"), 30, "etcd /health", self, "etcd")

    def start_apiserver(self) -> None:
        pki = self.workdir / "pki"
        args = [
            str(self.apiserver_bin),
            "--etcd-servers", self.etcd_url,
            "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
            "--secure-port", str(self.port),
            "--tls-cert-file", str(pki / "server.crt"),
            "--tls-private-key-file", str(pki / "server.key"),
            "--client-ca-file", str(pki / "ca.crt"),
            "--token-auth-file", str(self.workdir / "tokens.csv"),
            "--authorization-mode", "RBAC",
            "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
            "--service-account-key-file", str(pki / "sa.pub"),
            "--service-account-signing-key-file", str(pki / "sa.key"),
            "--service-cluster-ip-range", "10.96.0.0/16",
            "--allow-privileged=true",
            "--profiling=false",
            "--v=1",
            *self.extra_args,
        ]
        self.apiserver_proc = subprocess.Popen(
            args, stdout=self._log("kube-apiserver"), stderr=subprocess.STDOUT,  # type: ignore[arg-type]
            start_new_session=True,
        )
        _wait(self.ready, 90, "kube-apiserver /readyz", self, "kube-apiserver")

    def ready(self) -> bool:
        req = urllib.request.Request(f"{self.server}/readyz",
                                     headers={"Authorization": f"Bearer {self.admin_token}"})
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop_apiserver(self) -> None:
        _terminate(self.apiserver_proc)
        self.apiserver_proc = None

    def restart_apiserver(self) -> None:
        """Stop and start kube-apiserver on the same port and etcd (watches break, data stays)."""
        self.stop_apiserver()
        self.start_apiserver()

    def stop(self) -> None:
        _terminate(self.apiserver_proc)
        _terminate(self.etcd_proc)
        self.apiserver_proc = self.etcd_proc = None
        for f in self._logs:
            with contextlib.suppress(Exception):
                f.close()  # type: ignore[attr-defined]
        self._logs.clear()

    def log_tail(self, name: str, lines: int = 40) -> str:
        try:
            text = (self.workdir / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _wait(check: Callable[[], bool], timeout: float, what: str, cluster: KubeCluster,
          log: str) -> None:
    """Wait for ``check``, giving up as soon as the process behind ``log`` exits."""
    proc = cluster.etcd_proc if log == "etcd" else cluster.apiserver_proc
    if wait_until(check, timeout, give_up=lambda: proc is not None and proc.poll() is not None):
        return
    tail = cluster.log_tail(log)
    cluster.stop()
    raise RuntimeError(f"{what} not ready after {timeout:.0f}s; {log}.log tail:\n{tail}")


def _terminate(proc: Optional[subprocess.Popen[bytes]], timeout: float = 10.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def start_cluster(
    workdir: Path,
    apiserver_bin: Optional[Path] = None,
    extra_args: Sequence[str] = (),
) -> KubeCluster:
    """Start etcd and kube-apiserver on 127.0.0.1 (random ports), wait for /readyz, write the
    admin kubeconfig. ``extra_args`` go to kube-apiserver (e.g. ``--watch-cache=false``)."""
    binary = apiserver_bin or apiserver_binary()
    if not binary.exists():
        raise FileNotFoundError(
            f"{binary} is missing: build it with `bash scripts/stack/build.sh kubernetes`")
    workdir.mkdir(parents=True, exist_ok=True)
    make_certs(workdir / "pki")
    token = secrets.token_hex(16)
    (workdir / "tokens.csv").write_text(f'{token},otelguard-admin,admin-uid,"system:masters"\n')
    cluster = KubeCluster(workdir, free_port(), free_port(), free_port(), token, binary,
                          tuple(extra_args))
    cluster.kubeconfig_for_token(token, "admin")
    cluster.start_etcd()
    cluster.start_apiserver()
    return cluster


def main(argv: Sequence[str]) -> int:
    workdir = Path(argv[0] if argv else "/tmp/otelguard-kube")
    cluster = start_cluster(workdir)
    print(f"kube-apiserver {cluster.server} ready; KUBECONFIG={cluster.kubeconfig}", flush=True)
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        while not stop:
            time.sleep(0.5)
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
