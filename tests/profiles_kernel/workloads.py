"""A small shop of workloads on the real kernel, profiled through the product's path.

Path: the session Sensor (real tracepoints) -> the agent's OTLP mapping, batched like the agent
(tests/support/live_pipeline.py) -> ``k8s_attributes`` (K8sEnricher over the in-memory source
holding the Deployments, CronJob, ReplicaSets, Jobs and pods a cluster would hold for the
containers) -> the stages of ``otelguard run --profiles DIR --learn-for 80m`` (``falco_rules``
with the default rules, ``profiles``, ``noise_control``; runner.run_specs) in one
:class:`Pipeline`.

Workloads (every one has two replicas: two pods, two fake kubepods containers, one workload
identity through the owner chain), each started by a launcher named ``tini`` as a runtime
would (so the service's own interpreter is not "spawned by a non-shell service"):

- ``shop/web`` (Deployment): tests/profiles_kernel/app.py ``web``;
- ``shop/report`` (CronJob -> Job): ``/bin/sh -c`` writing a stamp and gzipping it;
- ``shop/resolver`` (Deployment): app.py ``resolver`` (DNS lookups, a database call);
- ``shop/web-poisoned``, ``shop/web-tainted``, ``shop/web-flooded`` (Deployments running
  ``web``): what an attacker does inside their learning windows (test_poisoning.py).

The profiles stage's clock is the wall clock plus an offset the test moves: one learning
bucket (600 s with ``--learn-for 80m``) passes between two passes of the workloads, and the
window ends when the offset passes it; detection latency is measured on the wall clock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

from otelguard import semconv as S
from otelguard.ebpf.sensor import Sensor
from otelguard.processors import registry
from otelguard.processors.k8s import Config as K8sConfig
from otelguard.processors.k8s import K8sEnricher
from otelguard.processors.k8s.source import InMemorySource, Kind
from otelguard.processors.pipeline import Pipeline
from otelguard.processors.profiles import ProfilesStage
from otelguard.processors.profiles.cli import approve
from otelguard.processors.profiles.document import file_name, load
from otelguard.processors.profiles.records import RULES, RULESET
from otelguard.runner import run_specs
from tests.attacks.harness import PYTHON
from tests.attacks.payloads import OVERLAY_CONTAINER
from tests.ebpf.containers import container, new_container_id
from tests.processors.k8s import objects as o
from tests.support.live_pipeline import Left, LivePipeline

NS = "shop"
LEARN_FOR = "80m"  # what `otelguard run --learn-for` is given: 600 s buckets
HERE = Path(__file__).resolve().parent
TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
DEPLOYMENTS = ("web", "resolver", "web-poisoned", "web-tainted", "web-flooded")
JUNK = 320  # distinct files the flood writes: past max_new_per_bucket (256)


class Clock:
    """Wall clock + an offset the test moves (learning buckets pass in no time)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@dataclass(frozen=True)
class Replica:
    workload: str  # the profile's workload key
    name: str  # the owner's name ("web", "report")
    pod_uid: str
    container_id: str
    role: str  # app.py role, or "report"


@dataclass
class Run:
    """One run of a replica: its steps' action times and what left the pipeline for it."""

    replica: Replica
    steps: dict[str, float]
    started: float
    pid: int
    returncode: int
    stderr: str
    detections: list[Left] = field(default_factory=list)

    def rule_hits(self) -> list[Left]:
        """Detections of the rule stage (not of the profiles stage)."""
        return [d for d in self.detections if d.attrs.get(S.SECURITY_RULE_RULESET_NAME) != RULESET]

    def deviations(self) -> list[Left]:
        return [d for d in self.detections if d.attrs.get(S.SECURITY_RULE_RULESET_NAME) == RULESET
                and S.ANOMALY_KIND in d.attrs]


def _listener(host: str, port: int, stop: threading.Event) -> threading.Thread:
    """A peer on loopback outside every container (the "database"): accepts and closes."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, port))
    srv.listen(64)
    srv.settimeout(0.2)

    def serve() -> None:
        with srv:
            while not stop.is_set():
                try:
                    conn, _ = srv.accept()
                except OSError:
                    continue
                conn.close()
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return t


def _free_port() -> int:
    """A free port below the ephemeral range (32768-): the workloads bind theirs again in every
    run, and a port the kernel hands out to some connection in between would be taken."""
    for _ in range(200):
        port = 20000 + secrets.randbelow(12000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-32000")


class Premises:
    """What the workloads run with, under ``base``: app.py and the ``tini`` launcher, their data
    directories, the service-account token file (made when missing, removed after), the
    loopback peers; and how a run of one container is started."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.data = base / "data"
        self.tini = str(base / "tini")
        self._stop = threading.Event()
        self._token_made: list[Path] = []
        ports: set[int] = set()
        while len(ports) < 4:
            ports.add(_free_port())
        web, db, alt, new = sorted(ports)
        self.config = {"data": str(self.data), "web_port": web, "db_port": db, "alt_port": alt,
                       "new_port": new, "token": TOKEN, "junk": JUNK}

    def open(self) -> None:
        for d in ("web/uploads", "web/drop", "report"):
            (self.data / d).mkdir(parents=True, exist_ok=True)
        for i in range(JUNK):
            (self.data / "junk" / str(i)).mkdir(parents=True, exist_ok=True)
        (self.data / "overlay.py").write_text(OVERLAY_CONTAINER)
        try:
            os.link(PYTHON, self.tini)
        except OSError:
            shutil.copy2(PYTHON, self.tini)
        shutil.copy(HERE / "tini.py", self.base / "tini.py")
        shutil.copy(HERE / "app.py", self.base / "app.py")
        token = Path(TOKEN)
        if not token.exists():
            for parent in reversed(token.resolve().parents):
                if not parent.exists():
                    parent.mkdir()
                    self._token_made.append(parent)
            token.write_text("eyJhbGciOiJSUzI1NiJ9.test.token")
            self._token_made.append(token.resolve())
        for host, port in (("127.0.0.1", self.config["db_port"]),
                           ("127.0.0.9", self.config["db_port"]),
                           ("127.0.0.1", self.config["alt_port"]),
                           *((f"127.0.0.{n}", self.config["db_port"]) for n in (66, 67, 68, 77))):
            _listener(host, port, self._stop)

    def close(self) -> None:
        self._stop.set()
        for p in reversed(self._token_made):
            if p.is_dir():
                p.rmdir()
            else:
                p.unlink()

    def argv(self, role: str, launch: Sequence[str] = ()) -> list[str]:
        if launch:
            return [self.tini, str(self.base / "tini.py"), *launch]
        if role == "report":
            stamp, out = self.data / "report" / "stamp", self.data / "report" / "stamp.gz"
            return [self.tini, str(self.base / "tini.py"), "/bin/sh", "-c",
                    f"date > {stamp}; gzip -c {stamp} > {out}"]
        return [self.tini, str(self.base / "tini.py"), PYTHON, str(self.base / "app.py"), role]

    @contextlib.contextmanager
    def launched(self, r: Replica, steps: Sequence[str] = (), launch: Sequence[str] = (),
                 shell: str = "", timeout_s: float = 30.0
                 ) -> Iterator[tuple[subprocess.Popen[bytes], float, dict[str, float], str]]:
        """Run the replica's workload (with ``steps``, or another command ``launch`` through its
        launcher, or ``shell`` appended to the report job's script) in its container, to its
        end; yields (process, start time, step marks, stderr) while the container exists."""
        argv = self.argv(r.role, launch)
        if shell:
            argv[-1] += f"; {shell}"
        env = {"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1",
               "OGP": json.dumps(self.config), "OGP_STEPS": ",".join(steps)}
        with container(pod_uid=r.pod_uid, container_id=r.container_id) as c:
            started = time.time()
            with c.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as p:
                out, err = p.communicate(timeout=timeout_s)
            marks = {}
            for line in out.decode(errors="replace").splitlines():
                if line.startswith("{"):
                    m = json.loads(line)
                    marks[m["step"]] = float(m["at"])
            yield p, started, marks, err.decode(errors="replace")


class Shop(Premises):
    """The workloads, the pipeline and the profiles directory of one test session."""

    def __init__(self, sensor: Sensor, base: Path) -> None:
        super().__init__(base)
        self.sensor = sensor
        self.profiles_dir = base / "profiles"
        self.clock = Clock()
        self.replicas: dict[str, list[Replica]] = {}
        self.learning_runs: list[Run] = []
        self.learning_losses = 0  # records the sensor lost while the shop learned
        self.refused: dict[str, str] = {}  # workload -> why `profile approve` refused it
        self.source = InMemorySource()
        self._world()
        self.profiles, self.pipeline = self._pipeline()
        self.live = LivePipeline(sensor, self.pipeline)
        for replicas in self.replicas.values():
            for r in replicas:
                self.live.watch(r.container_id)

    # --- setup -----------------------------------------------------------------------------

    def _world(self) -> None:
        self.source.put(Kind.NAMESPACE, o.namespace(NS))
        ip = iter(range(10, 250))
        for name in DEPLOYMENTS:
            role = "resolver" if name == "resolver" else "web"
            dep = o.owner("Deployment", name)
            rs = f"{name}-7c9f"
            self.source.put(Kind.REPLICASET, o.replicaset(NS, rs, name, "shop/app:1", dep))
            self.replicas[name] = [
                self._pod(f"{rs}-{i}", o.owner("ReplicaSet", rs), f"k8s/{NS}/Deployment/{name}/main",
                          name, role, f"10.44.0.{next(ip)}") for i in "ab"]
        cron = o.owner("CronJob", "report", api="batch/v1")
        self.replicas["report"] = []
        for i in "ab":
            job = f"report-2958{i}"
            self.source.put(Kind.JOB, o.job(NS, job, cron))
            self.replicas["report"].append(self._pod(
                f"{job}-x", o.owner("Job", job, api="batch/v1"),
                f"k8s/{NS}/CronJob/report/main", "report", "report", f"10.44.0.{next(ip)}"))

    def _pod(self, pod: str, owner: dict[str, Any], workload: str, name: str, role: str,
             ip: str, uid: Optional[str] = None) -> Replica:
        uid = uid or str(uuid.uuid4())
        cid = new_container_id()
        body = o.pod(NS, pod, uid=uid, owner_ref=owner,
                     containers=[{"name": "main", "image": "shop/app:1"}])
        self.source.put(Kind.POD, o.running(body, ip, {"main": cid}))
        return Replica(workload, name, uid, cid, role)

    def new_replica(self, name: str) -> Replica:
        """One more pod of ``name`` (a scale-up after learning)."""
        first = self.replicas[name][0]
        rs = f"{name}-7c9f"
        r = self._pod(f"{rs}-{secrets.token_hex(2)}", o.owner("ReplicaSet", rs), first.workload,
                      name, first.role, f"10.44.1.{len(self.replicas[name]) + 10}")
        self.replicas[name].append(r)
        self.live.watch(r.container_id)
        return r

    def _pipeline(self) -> tuple[ProfilesStage, Pipeline]:
        stages: list[tuple[str, Any]] = [("k8s_attributes", K8sEnricher(
            K8sConfig(wait_for_sync_seconds=0, hold_seconds=0.5), self.source))]
        profiles: Optional[ProfilesStage] = None
        for spec in run_specs(None, None, str(self.profiles_dir), LEARN_FOR, incidents=False):
            if spec.type == "profiles":
                # the stage as `otelguard run` configures it, on the test's clock, syncing
                # its files every half second instead of every 5 s
                config = dataclasses.replace(spec.config, save_interval_seconds=0.5)
                profiles = ProfilesStage(config, self.clock)
                stages.append((spec.name, profiles))
            else:
                stages.append((spec.name, registry.create(spec.type, spec.config)))
        assert profiles is not None
        return profiles, Pipeline(stages)

    def start(self) -> None:
        self.open()
        self.pipeline.start()
        self.live.start()

    def stop(self) -> None:
        self.close()
        self.live.stop()
        self.pipeline.shutdown()

    # --- runs ------------------------------------------------------------------------------

    def run(self, r: Replica, steps: Sequence[str] = (), launch: Sequence[str] = (),
            shell: str = "") -> Run:
        """:meth:`Premises.launched`, then wait until its exit record left the pipeline."""
        with self.launched(r, steps, launch, shell) as (p, started, marks, err):
            assert self.live.exited(p.pid, 15), f"no exit record of {p.args} left the pipeline"
        run = Run(r, marks, started, p.pid, p.returncode, err)
        run.detections = [d for d in self.live.detections(started)
                          if d.resource.get(S.CONTAINER_ID) == r.container_id]
        return run

    def wait_detections(self, run: Run, predicate: Any, timeout_s: float = 3.0) -> None:
        """Let late detections of ``run`` arrive (bounded) until ``predicate(run)`` holds."""
        def check() -> bool:
            run.detections = [d for d in self.live.detections(run.started)
                              if d.resource.get(S.CONTAINER_ID) == run.replica.container_id]
            return bool(predicate(run))
        self.live.wait(check, timeout_s)

    def expect_deviation(self, r: Replica, kind: str, match: Callable[[str], bool],
                         steps: Sequence[str] = (), launch: Sequence[str] = (),
                         shell: str = "", timed: str = "") -> tuple[Run, Left, float]:
        """Run, then the first deviation of ``kind`` whose value ``match``es and its latency:
        from the action (the mark of step ``timed``, else of the first step, else the launch)
        to leaving the pipeline."""
        run = self.run(r, steps, launch, shell)
        assert run.returncode == 0, run.stderr

        def found(rn: Run) -> list[Left]:
            return [d for d in rn.deviations() if d.attrs[S.ANOMALY_KIND] == kind
                    and match(str(d.attrs[S.ANOMALY_VALUE]))]
        self.wait_detections(run, found, 3.0)
        hits = found(run)
        assert hits, (kind, [(d.attrs[S.ANOMALY_KIND], d.attrs[S.ANOMALY_VALUE])
                             for d in run.deviations()])
        d = hits[0]
        assert d.attrs[S.SECURITY_RULE_NAME] == RULES[kind].name
        assert d.attrs[S.PROFILE_WORKLOAD] == r.workload
        acted = run.steps[timed or steps[0]] if steps else run.started
        return run, d, d.at - acted

    def reports(self, rule: str, workload: str, since: float = 0.0) -> list[Left]:
        """Reports about a profile itself (tampered, partial) that left the pipeline."""
        return [d for d in self.live.detections(since)
                if d.attrs.get(S.SECURITY_RULE_NAME) == rule
                and d.attrs.get(S.PROFILE_WORKLOAD) == workload]

    # --- learning and approval ---------------------------------------------------------------

    def next_bucket(self, config_bucket: float) -> None:
        self.clock.offset += config_bucket

    def files(self) -> dict[str, Path]:
        out = {}
        for path in self.profiles_dir.glob("*.yaml"):
            out[load(path).metadata.workload] = path
        return out

    def wait_state(self, workloads: Sequence[str], states: Sequence[str],
                   timeout_s: float = 10.0) -> None:
        """Until the stage holds each workload's profile in one of ``states`` (its sync thread
        ends windows and reads the files people changed)."""
        def done() -> bool:
            for w in workloads:
                p = self.profiles.profile(w)
                if p is None or p.state not in states:
                    return False
            return True
        deadline = time.monotonic() + timeout_s
        while not done():
            assert time.monotonic() < deadline, {
                w: getattr(self.profiles.profile(w), "state", None) for w in workloads}
            time.sleep(0.1)

    def wait_files(self, workloads: Sequence[str], states: Sequence[str],
                   timeout_s: float = 10.0) -> None:
        """Until each workload's file on disk is in one of ``states``."""
        deadline = time.monotonic() + timeout_s
        while True:
            current = {}
            for w in workloads:
                try:
                    current[w] = load(self.file_of(w)).status.state
                except Exception:  # noqa: BLE001 - not written yet
                    current[w] = None
            if all(s in states for s in current.values()):
                return
            assert time.monotonic() < deadline, current
            time.sleep(0.1)

    def file_of(self, workload: str) -> Path:
        return self.profiles_dir / file_name(workload)

    def approve(self, workload: str, accept_taint: bool = False) -> None:
        approve(self.file_of(workload), "alice", accept_taint)

    def all_replicas(self) -> Iterator[Replica]:
        for replicas in self.replicas.values():
            yield from replicas
