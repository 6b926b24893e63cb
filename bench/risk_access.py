"""What the grants and reach analysers cost per record in the ``risk`` stage.

``RiskStage.process`` with ``analysers: [grants, reach]`` on parsed copies of 512-record
agent-shaped requests (bench/exporter_build.py's file/network-heavy mix: 8 containers + host,
~33 attributes per record), each container's Resource carrying what ``k8s_attributes`` adds
(names, the token and a hostPath mount, added capabilities), against parsing the same request
(upb, the receiver's first step; the baseline), and against the same stage whose analysers do
nothing (the stage's own share: an Observation per record of the events they read), the three
interleaved batch by batch so the shared machine's load drifts over all alike. The tier map is in memory (a labelled Service
and namespace), so no API server is involved; every connect is judged.

Run: ``.venv/bin/python -m bench.risk_access`` (``--batches N``).
"""

from __future__ import annotations

import argparse
import time
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from bench.common import summary_line
from bench.exporter_build import NODE, make_events
from otelguard import semconv as S
from otelguard.exporter.builder import OtlpBuilder
from otelguard.kube.reflector import InMemorySource, Kind
from otelguard.otlp.messages import attrs_dict, set_attrs
from otelguard.processors.risk import Config
from otelguard.processors.risk.processor import RiskStage

BATCH = 512
MOUNTS = ["/var/lib/kubelet/pods/p/volumes/kubernetes.io~projected/kube-api-access-x:"
          "/var/run/secrets/kubernetes.io/serviceaccount:ro:false:rprivate",
          "/var/log/pods:/host/logs:ro:false:rprivate"]


def enriched(raw: bytes) -> bytes:
    """The request as k8s_attributes leaves it: pod-spec facts on every container Resource."""
    req = ExportLogsServiceRequest()
    req.ParseFromString(raw)
    for i, rl in enumerate(req.resource_logs):
        if attrs_dict(rl.resource.attributes).get(S.CONTAINER_ID):
            set_attrs(rl.resource.attributes, {
                S.K8S_NAMESPACE_NAME: f"ns{i % 3}", S.K8S_DEPLOYMENT_NAME: f"app{i}",
                S.K8S_CONTAINER_NAME: "main", S.K8S_POD_IP: f"10.244.0.{i + 1}",
                S.K8S_POD_PRIVILEGED: False, S.K8S_CONTAINER_MOUNTS: MOUNTS,
                S.K8S_POD_ADDED_CAPABILITIES: ["CAP_NET_ADMIN"],
                S.K8S_POD_SERVICE_ACCOUNT: "default"})
    return req.SerializeToString()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--quick", action="store_true", help="20 batches")
    args = ap.parse_args()
    batches = 20 if args.quick else args.batches
    raw = enriched(OtlpBuilder(NODE).logs_bytes(make_events(BATCH, process_part=True)))

    def parse() -> ExportLogsServiceRequest:
        req = ExportLogsServiceRequest()
        req.ParseFromString(raw)
        return req

    source = InMemorySource()
    source.put(Kind.NAMESPACE, {"metadata": {"name": "vault", "labels": {
        "otelguard.dev/tier": "sensitive"}}})
    source.put(Kind.SERVICE, {"metadata": {"namespace": "ns1", "name": "db", "labels": {
        "otelguard.dev/tier": "sensitive"}}, "spec": {"clusterIP": "10.96.0.9"}})
    stage = RiskStage(Config(analysers=("grants", "reach")))
    stage.analyser("reach").source = source  # type: ignore[attr-defined]
    stage.start()
    # the stage's own share: the same records handed to analysers that do nothing
    idle = RiskStage(Config(analysers=("grants", "reach")))
    for a in (idle.analyser("grants"), idle.analyser("reach")):
        a.observe = lambda observation: None  # type: ignore[method-assign]
    # A/B interleaved batch by batch, so the machine's load drifts over all three alike
    totals = {"parse": 0.0, "idle": 0.0, "risk": 0.0}
    for _ in range(batches):
        for name, run in (("parse", lambda: parse()),
                          ("idle", lambda req=parse(): idle.process(req)),
                          ("risk", lambda req=parse(): stage.process(req))):
            t0 = time.perf_counter()
            run()
            totals[name] += time.perf_counter() - t0
    baseline, stage_only, risk = (totals[k] / (batches * BATCH) * 1e6
                                  for k in ("parse", "idle", "risk"))
    stage.report()
    stage.shutdown()
    print(f"{BATCH} records per request, {batches} requests, {len(stage.workloads())} workloads")
    print(f"parse (baseline)   : {baseline:6.2f} µs/record")
    print(f"risk stage alone   : {stage_only:6.2f} µs/record (x{stage_only / baseline:.2f} parse: "
          "an Observation per exec/open/connect/... record)")
    print(f"risk grants + reach: {risk:6.2f} µs/record (x{risk / baseline:.2f} parse; the "
          f"analysers {risk - stage_only:.2f} µs)")
    print(summary_line("risk_access", {"parse_us": round(baseline, 3), "risk_us": round(risk, 3),
                                 "stage_only_us": round(stage_only, 3),
                                 "ratio": round(risk / baseline, 3)}))


if __name__ == "__main__":
    main()
