"""The real observability stack on 127.0.0.1 for end-to-end tests: Collector, Jaeger, Loki, Prometheus.

Each component is the real binary (Go builds from ``scripts/stack/build.sh`` under
``~/.cache/otelguard/<component>``, Debian's ``/usr/bin/prometheus``) started with the checked-in
configs from ``otel-config/`` on free loopback ports, in its own temp directory, with its log
kept there; ``start()`` waits for the component's readiness endpoint and raises
:class:`StackError` with the log tail if it never comes. Nothing listens beyond 127.0.0.1.

Usage (fixtures at the bottom wrap these for pytest)::

    loki = Loki(tmp / "loki").start()
    jaeger = Jaeger(tmp / "jaeger").start()
    col = Collector(tmp / "col", [BACKENDS_CONFIG], backends_env(loki, jaeger)).start()
    col.otlp_grpc            # "127.0.0.1:<port>" for an OTLP/gRPC client
    col.tap_lines()          # what the Collector exported, as OTLP/JSON documents (file exporter)
    loki.query_range('{otelguard_stream="detection"}')

Cost on 2 cores: Collector ~0.5 s to ready, Jaeger ~1 s, Loki ~2-4 s, Prometheus ~1 s.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

import pytest
import yaml

from tests.support.certs import GatewayTls
from tests.support.polling import wait_until
from tests.support.endpoints import free_port

ROOT = Path(__file__).resolve().parents[2]
OTEL_CONFIG = ROOT / "otel-config"
BACKENDS_CONFIG = OTEL_CONFIG / "collector" / "backends.yaml"
GATEWAY_CONFIG = OTEL_CONFIG / "collector" / "gateway.yaml"
LOKI_CONFIG = OTEL_CONFIG / "loki.yaml"
JAEGER_CONFIG = OTEL_CONFIG / "jaeger.yaml"
PROMETHEUS_DIR = OTEL_CONFIG / "prometheus"
CACHE = Path(os.environ.get("OTELGUARD_CACHE", Path.home() / ".cache" / "otelguard"))
PROMETHEUS = Path(os.environ.get("OTELGUARD_PROMETHEUS", "/usr/bin/prometheus"))
PROMTOOL = Path(os.environ.get("OTELGUARD_PROMTOOL", "/usr/bin/promtool"))


class StackError(RuntimeError):
    """A component could not be found, started or queried (the message carries its log tail)."""


def binary(component: str, name: str) -> Path:
    """A Go-built binary from the cache; a clear error naming the build command when missing."""
    path = CACHE / component / name
    if not path.is_file():
        raise StackError(f"{path} is missing: run `bash scripts/stack/build.sh {component}` "
                         "(or `make stack-build`) first")
    return path


def collector_binary() -> Path:
    return binary("otelcol", "otelcol-otelguard")




def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """(status, body); connection errors are status 0 so readiness loops can poll."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as e:
        return int(e.code), bytes(e.read())
    except (urllib.error.URLError, OSError):
        return 0, b""


def get_json(url: str, timeout: float = 10.0) -> Any:
    status, body = http_get(url, timeout)
    if status != 200:
        raise StackError(f"GET {url} -> {status}: {body[:500]!r}")
    return json.loads(body)


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the test process dies, however it dies (a killed
    pytest must not leave a Collector behind growing on a shared machine)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class Component:
    """One subprocess with a work dir, a log file, a readiness probe and a clean stop."""

    name = "component"
    ready_timeout = 60.0

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"{self.name}.log"
        self.proc: Optional[subprocess.Popen[bytes]] = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return {}

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self) -> "Component":
        env = {**os.environ, **self.environment()}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(), cwd=self.workdir, env=env, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, preexec_fn=_die_with_parent)
        if not wait_until(lambda: self.proc is not None and self.proc.poll() is None and self.ready(),
                          self.ready_timeout, 0.25):
            code = self.proc.poll()
            self.stop()
            raise StackError(f"{self.name} not ready after {self.ready_timeout:.0f}s "
                             f"(exit code {code}); log tail:\n{self.log_tail()}")
        return self

    def stop(self, timeout: float = 15.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def kill(self) -> None:
        """SIGKILL, as the OOM killer would: nothing gets to flush. ``start()`` runs it again."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def merge_config(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """The Collector's rule for several --config files: maps merge recursively, the rest is replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge_config(out[key], value)
        else:
            out[key] = value
    return out


def compose_collector_config(configs: Sequence[Path], tap: Optional[Path]) -> dict[str, Any]:
    """Merge the config files and, with ``tap``, add a file exporter to every pipeline that
    exports to something other than a connector (so the tap sees what left the Collector)."""
    merged: dict[str, Any] = {}
    for path in configs:
        merged = merge_config(merged, yaml.safe_load(path.read_text()) or {})
    if tap is not None:
        connectors = set((merged.get("connectors") or {}).keys())
        merged.setdefault("exporters", {})["file/tap"] = {"path": str(tap), "flush_interval": "100ms"}
        for pipeline in merged["service"]["pipelines"].values():
            exporters = pipeline.get("exporters", [])
            if any(e not in connectors for e in exporters):
                pipeline["exporters"] = [*exporters, "file/tap"]
    return merged


class Collector(Component):
    """``otelcol-otelguard`` with our configs; ports come from the configs' ${env:...} variables.

    ``env`` adds or overrides variables (e.g. the Loki/Jaeger addresses from :func:`backends_env`).
    With ``tap`` (default) everything exported is also written as OTLP/JSON lines to ``tap_path``.
    """

    name = "otelcol"
    ready_timeout = 30.0

    def __init__(self, workdir: Path, configs: Sequence[Path] = (BACKENDS_CONFIG,),
                 env: Optional[Mapping[str, str]] = None, tap: bool = True,
                 tls: Optional[GatewayTls] = None) -> None:
        super().__init__(workdir)
        self.configs = list(configs)
        self.tls = tls  # gateway.yaml's certificates and tokens (required with that file)
        self.tap_path: Optional[Path] = workdir / "tap.jsonl" if tap else None
        self.ports = {k: free_port() for k in ("grpc", "http", "prom", "telemetry", "health", "agents")}
        self.otlp_grpc = f"127.0.0.1:{self.ports['grpc']}"
        self.otlp_http = f"http://127.0.0.1:{self.ports['http']}"
        self.agents_grpc = f"127.0.0.1:{self.ports['agents']}"
        self.prometheus_exporter = f"127.0.0.1:{self.ports['prom']}"
        self.telemetry = f"127.0.0.1:{self.ports['telemetry']}"
        self.health_url = f"http://127.0.0.1:{self.ports['health']}/"
        self.env = {
            "OTELGUARD_COLLECTOR_OTLP_GRPC": self.otlp_grpc,
            "OTELGUARD_COLLECTOR_OTLP_HTTP": f"127.0.0.1:{self.ports['http']}",
            "OTELGUARD_COLLECTOR_AGENT_GRPC": self.agents_grpc,
            "OTELGUARD_COLLECTOR_PROMETHEUS": self.prometheus_exporter,
            "OTELGUARD_COLLECTOR_TELEMETRY_PORT": str(self.ports["telemetry"]),
            "OTELGUARD_COLLECTOR_HEALTH": f"127.0.0.1:{self.ports['health']}",
            # Unreachable unless the caller says otherwise: a missing backend must show as
            # export failures, never as data silently going to a default port someone else uses.
            "OTELGUARD_LOKI_OTLP_URL": f"http://127.0.0.1:{free_port()}/otlp",
            "OTELGUARD_JAEGER_OTLP_GRPC": f"127.0.0.1:{free_port()}",
            "OTELGUARD_PROCESSOR_ENDPOINT": f"127.0.0.1:{free_port()}",
            # Its own persistent queues (never the shared default under /var/lib), kept across
            # restarts of this object: start() after a kill finds what the queues held.
            "OTELGUARD_COLLECTOR_QUEUE_DIR": str(workdir / "queues"),
            **(tls.collector_env() if tls is not None else {}),
            **(env or {}),
        }
        self.queue_dir = Path(self.env["OTELGUARD_COLLECTOR_QUEUE_DIR"])
        self.config_path = workdir / "collector.yaml"

    def command(self) -> list[str]:
        self.config_path.write_text(yaml.safe_dump(compose_collector_config(self.configs, self.tap_path),
                                                   sort_keys=False))
        return [str(collector_binary()), "--config", str(self.config_path)]

    def environment(self) -> dict[str, str]:
        return self.env

    def ready(self) -> bool:
        return http_get(self.health_url, 2.0)[0] == 200

    def tap_text(self) -> list[str]:
        """The complete lines the file exporter wrote so far (a line still being written is
        left for the next call)."""
        if self.tap_path is None or not self.tap_path.exists():
            return []
        text = self.tap_path.read_text()
        lines = text.split("\n")
        if not text.endswith("\n"):
            lines = lines[:-1]   # the exporter is still writing this one
        return [line for line in lines if line.strip()]

    def tap_lines(self) -> list[dict[str, Any]]:
        """Everything the Collector exported so far (one OTLP/JSON request object per line)."""
        return [json.loads(line) for line in self.tap_text()]


def validate_collector_config(configs: Sequence[Path], env: Optional[Mapping[str, str]] = None,
                              ) -> subprocess.CompletedProcess[str]:
    """``otelcol-otelguard validate``: unmarshals every component's config and parses OTTL."""
    args = [str(collector_binary()), "validate"]
    for c in configs:
        args += ["--config", str(c)]
    return subprocess.run(args, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


class Jaeger(Component):
    """Jaeger v2 all-in-one with ``otel-config/jaeger.yaml`` (in-memory store)."""

    name = "jaeger"
    ready_timeout = 60.0

    def __init__(self, workdir: Path, host: str = "127.0.0.1") -> None:
        """``host``: where the OTLP receivers listen (the query API stays on loopback)."""
        super().__init__(workdir)
        ports = {k: free_port() for k in ("grpc", "http", "qhttp", "qgrpc", "tel")}
        self.otlp_grpc = f"{host}:{ports['grpc']}"
        self.query_url = f"http://127.0.0.1:{ports['qhttp']}"
        self.env = {
            "JAEGER_OTLP_GRPC": self.otlp_grpc,
            "JAEGER_OTLP_HTTP": f"{host}:{ports['http']}",
            "JAEGER_QUERY_HTTP": f"127.0.0.1:{ports['qhttp']}",
            "JAEGER_QUERY_GRPC": f"127.0.0.1:{ports['qgrpc']}",
            "JAEGER_TELEMETRY_PORT": str(ports["tel"]),
        }

    def command(self) -> list[str]:
        return [str(binary("jaeger", "jaeger")), "--config", str(JAEGER_CONFIG)]

    def environment(self) -> dict[str, str]:
        return self.env

    def ready(self) -> bool:
        return http_get(f"{self.query_url}/api/services", 2.0)[0] == 200

    def services(self) -> list[str]:
        return list(get_json(f"{self.query_url}/api/services").get("data") or [])

    def trace(self, trace_id_hex: str) -> list[dict[str, Any]]:
        """Spans of one trace via /api/v3 (OTLP JSON resourceSpans); [] while not yet stored."""
        status, body = http_get(f"{self.query_url}/api/v3/traces/{trace_id_hex}")
        if status == 404:
            return []
        if status != 200:
            raise StackError(f"jaeger trace {trace_id_hex} -> {status}: {body[:300]!r}")
        return list(json.loads(body).get("result", {}).get("resourceSpans") or [])

    def search(self, service: str, tags: Mapping[str, str], lookback: str = "1h",
               limit: int = 20) -> list[dict[str, Any]]:
        """The v1-style search the UI uses: /api/traces?service=&tags={json}."""
        q = urllib.parse.urlencode({"service": service, "tags": json.dumps(dict(tags)),
                                    "lookback": lookback, "limit": str(limit)})
        return list(get_json(f"{self.query_url}/api/traces?{q}").get("data") or [])


class Loki(Component):
    """Loki single binary with ``otel-config/loki.yaml``, data in the work dir."""

    name = "loki"
    ready_timeout = 90.0

    def __init__(self, workdir: Path, host: str = "127.0.0.1") -> None:
        """``host``: where the HTTP API and OTLP listen (pods of the test cluster need 198.51.100.1)."""
        super().__init__(workdir)
        self.host = host
        self.http_port, self.grpc_port = free_port(), free_port()
        self.url = f"http://{host}:{self.http_port}"
        self.otlp_url = f"{self.url}/otlp"

    def command(self) -> list[str]:
        return [str(binary("loki", "loki")), f"-config.file={LOKI_CONFIG}", "-config.expand-env=true"]

    def environment(self) -> dict[str, str]:
        return {"LOKI_HTTP_ADDRESS": self.host,
                "LOKI_HTTP_PORT": str(self.http_port), "LOKI_GRPC_PORT": str(self.grpc_port),
                "LOKI_DATA_DIR": str(self.workdir / "data")}

    def ready(self) -> bool:
        return http_get(f"{self.url}/ready", 2.0)[0] == 200

    def query_range(self, logql: str, since_s: float = 3600.0, limit: int = 1000,
                    direction: str = "backward") -> dict[str, Any]:
        """``/loki/api/v1/query_range`` over the last ``since_s`` seconds; the ``data`` object."""
        now_ns = time.time_ns()
        q = urllib.parse.urlencode({"query": logql, "start": str(now_ns - int(since_s * 1e9)),
                                    "end": str(now_ns + int(60e9)), "limit": str(limit),
                                    "direction": direction})
        body = get_json(f"{self.url}/loki/api/v1/query_range?{q}", timeout=30.0)
        if body.get("status") != "success":
            raise StackError(f"loki query {logql!r}: {body}")
        return dict(body["data"])

    def query(self, logql: str) -> dict[str, Any]:
        """``/loki/api/v1/query`` (an instant query, as a Grafana table runs one) now."""
        q = urllib.parse.urlencode({"query": logql, "time": str(time.time_ns())})
        body = get_json(f"{self.url}/loki/api/v1/query?{q}", timeout=30.0)
        if body.get("status") != "success":
            raise StackError(f"loki query {logql!r}: {body}")
        return dict(body["data"])

    def series(self, selector: str, since_s: float = 3600.0) -> list[dict[str, str]]:
        """Index label sets of the streams matching ``selector`` (no structured metadata)."""
        now_ns = time.time_ns()
        q = urllib.parse.urlencode({"match[]": selector, "start": str(now_ns - int(since_s * 1e9)),
                                    "end": str(now_ns + int(60e9))})
        return list(get_json(f"{self.url}/loki/api/v1/series?{q}").get("data") or [])

    def label_values(self, label: str, selector: Optional[str] = None,
                     since_s: float = 3600.0) -> list[str]:
        """``/loki/api/v1/label/<label>/values`` (under ``selector`` when given), as Grafana's
        label_values() variable asks."""
        now_ns = time.time_ns()
        params = {"start": str(now_ns - int(since_s * 1e9)), "end": str(now_ns + int(60e9))}
        if selector:
            params["query"] = selector
        q = urllib.parse.urlencode(params)
        url = f"{self.url}/loki/api/v1/label/{urllib.parse.quote(label)}/values?{q}"
        return list(get_json(url).get("data") or [])

    def labels(self) -> list[str]:
        return list(get_json(f"{self.url}/loki/api/v1/labels").get("data") or [])


class Prometheus(Component):
    """Debian's Prometheus with ``otel-config/prometheus`` copied into the work dir.

    Scrape and evaluation intervals are shortened to ``interval`` so tests see samples in
    seconds; targets are file_sd files, set with :meth:`set_targets` at any time.
    """

    name = "prometheus"
    ready_timeout = 60.0

    def __init__(self, workdir: Path, interval: str = "1s") -> None:
        super().__init__(workdir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.confdir = workdir / "config"
        shutil.copytree(PROMETHEUS_DIR, self.confdir, dirs_exist_ok=True)
        conf = yaml.safe_load((self.confdir / "prometheus.yml").read_text())
        conf["global"]["scrape_interval"] = interval
        conf["global"]["evaluation_interval"] = interval
        (self.confdir / "prometheus.yml").write_text(yaml.safe_dump(conf, sort_keys=False))
        (self.confdir / "targets").mkdir(exist_ok=True)
        self.targets: dict[str, list[str]] = {}
        for job in ("otelguard", "otelcol-exporter", "otelcol"):
            self.set_targets(job, [])

    def set_targets(self, job: str, targets: Sequence[str]) -> None:
        """Write targets/<job>.json atomically (Prometheus re-reads file_sd files on change)."""
        self.targets[job] = list(targets)
        path = self.confdir / "targets" / f"{job}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps([{"targets": list(targets), "labels": {}}] if targets else []))
        tmp.replace(path)

    def add_targets(self, job: str, targets: Sequence[str]) -> None:
        """Scrape these too (session fixtures share one Prometheus; each adds its own)."""
        self.set_targets(job, [*self.targets.get(job, []), *(t for t in targets if t not in self.targets.get(job, []))])

    def remove_targets(self, job: str, targets: Sequence[str]) -> None:
        self.set_targets(job, [t for t in self.targets.get(job, []) if t not in targets])

    def command(self) -> list[str]:
        return [str(PROMETHEUS), f"--config.file={self.confdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"]

    def ready(self) -> bool:
        return http_get(f"{self.url}/-/ready", 2.0)[0] == 200

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Instant query; the result vector (raises on a PromQL error)."""
        body = get_json(f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}")
        if body.get("status") != "success":
            raise StackError(f"promql {promql!r}: {body}")
        return list(body["data"]["result"])

    def active_targets(self) -> list[dict[str, Any]]:
        return list(get_json(f"{self.url}/api/v1/targets")["data"]["activeTargets"])


class ProcessorService(Component):
    """The real ``otelguard processor`` (default stages: falco_rules, noise_control) on free ports,
    exporting OTLP/gRPC to ``export`` (a Collector's backend receiver in pipeline (a))."""

    name = "otelguard-processor"
    ready_timeout = 60.0

    def __init__(self, workdir: Path, export: str, extra_args: Sequence[str] = (),
                 listen_tls: Sequence[str] = ("--insecure",),
                 export_tls: Sequence[str] = ("--export-insecure",),
                 host: str = "127.0.0.1", grpc_port: Optional[int] = None) -> None:
        super().__init__(workdir)
        self.listen_tls = list(listen_tls)  # --insecure, or --tls-cert/--tls-key/--token-file
        self.export_tls = list(export_tls)  # --export-insecure, or --export-ca/...
        self.host = host  # another loopback address (127.0.0.2, ...) stands for another pod
        self.grpc_port, self.metrics_port = grpc_port or free_port(), free_port()
        self.endpoint = f"{host}:{self.grpc_port}"
        self.metrics = f"127.0.0.1:{self.metrics_port}"
        self.export = export
        self.extra_args = list(extra_args)

    def command(self) -> list[str]:
        exe = Path(sys.executable).parent / "otelguard"
        return [str(exe), "processor", "--listen", self.endpoint, "--export", f"otlp:{self.export}",
                "--metrics", self.metrics, *self.listen_tls, *self.export_tls,
                *self.extra_args]

    def ready(self) -> bool:
        if http_get(f"http://{self.metrics}/metrics", 2.0)[0] != 200:
            return False
        with socket.socket() as s:
            return s.connect_ex((self.host, self.grpc_port)) == 0


class Agent(Component):
    """The real ``otelguard agent`` (root and the kernel: eBPF) exporting OTLP/gRPC to ``endpoint``
    (a Collector's agent receiver in pipeline (a), or the processor service in (b)), with a
    ``--config`` whose sensor sees only ``scope`` so host activity cannot flood the test. Ready
    once the probes are attached (its log says "sensor started": /metrics answers ~20 s earlier,
    while BCC still compiles, and activity in that window would never be seen)."""

    name = "otelguard-agent"
    ready_timeout = 180.0

    def __init__(self, workdir: Path, endpoint: str, scope: str = "/kubepods.slice",
                 node_name: str = "e2e-node", tls: Sequence[str] = ("--otlp-insecure",)) -> None:
        super().__init__(workdir)
        self.endpoint = endpoint
        self.tls = list(tls)  # --otlp-insecure, or --otlp-ca/--otlp-token-file
        self.metrics = f"127.0.0.1:{free_port()}"
        self.spool = workdir / "spool"
        self.config = workdir / "agent.yaml"
        self.config.write_text(yaml.safe_dump({"sensor": {"cgroup_scope": [scope],
                                                          "node_name": node_name}}))

    def command(self) -> list[str]:
        return [str(Path(sys.executable).parent / "otelguard"), "agent", "--config",
                str(self.config), "--otlp-endpoint", self.endpoint, *self.tls,
                "--metrics", self.metrics,
                "--spool-dir", str(self.spool), "--spool-max-bytes", str(64 << 20)]

    def ready(self) -> bool:
        return ("sensor started" in self.log_tail(200)
                and http_get(f"http://{self.metrics}/metrics", 2.0)[0] == 200)

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM and the exit code (the agent flushes what it holds before exiting)."""
        proc, self.proc = self.proc, None
        assert proc is not None
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            return -9


def backends_env(loki: Optional[Loki] = None, jaeger: Optional[Jaeger] = None) -> dict[str, str]:
    """The Collector variables that point backends.yaml at these Loki and Jaeger instances."""
    env: dict[str, str] = {}
    if loki is not None:
        env["OTELGUARD_LOKI_OTLP_URL"] = loki.otlp_url
    if jaeger is not None:
        env["OTELGUARD_JAEGER_OTLP_GRPC"] = jaeger.otlp_grpc
    return env


# --- pytest fixtures (import them in a conftest: `from tests.support.stack import *`) --------

@pytest.fixture(scope="session")
def loki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loki]:
    comp = Loki(tmp_path_factory.mktemp("loki"))
    comp.start()
    yield comp
    comp.stop()


@pytest.fixture(scope="session")
def jaeger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Jaeger]:
    comp = Jaeger(tmp_path_factory.mktemp("jaeger"))
    comp.start()
    yield comp
    comp.stop()


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    comp = Prometheus(tmp_path_factory.mktemp("prometheus"))
    comp.start()
    yield comp
    comp.stop()


@pytest.fixture(scope="session")
def backends_collector(tmp_path_factory: pytest.TempPathFactory, loki: Loki,
                       jaeger: Jaeger) -> Iterator[Collector]:
    """Pipeline (b)'s Collector (backends.yaml) wired to the session's Loki and Jaeger."""
    comp = Collector(tmp_path_factory.mktemp("otelcol"), [BACKENDS_CONFIG], backends_env(loki, jaeger))
    comp.start()
    yield comp
    comp.stop()


__all__ = [
    "Agent", "BACKENDS_CONFIG", "GATEWAY_CONFIG", "Collector", "Jaeger", "Loki", "ProcessorService", "Prometheus",
    "StackError", "backends_collector", "backends_env", "jaeger", "loki", "prometheus",
    "validate_collector_config",
]
