"""Sender identity through the real gateway Collector (pipeline (a)): the agent's builder signs
each Resource with its node token, the shipped gateway config passes the stamp through to a
real ``otelguard processor`` (service.identity + k8s_attributes against a real kube-apiserver),
which marks it verified; a batch signed by node-b claiming a container of a pod that the API
server places on node-a is kept, enriched with the real pod, and becomes the CRITICAL
"Record claims a pod on another node" detection. Checked in what the Collector exports (tap)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc import LogsServiceStub

from otelguard import semconv as sc
from otelguard.ebpf.events import Event
from otelguard.exporter.builder import OtlpBuilder
from otelguard.exporter.settings import NodeIdentity
from otelguard.processors.k8s.identity import RULE
from otelguard.transport.identity import ResourceSigner
from tests.ebpf.containers import new_container_id
from tests.support.certs import GatewayTls
from tests.support.kube import KubeCluster
from tests.support.kube_world import make_world
from tests.support.polling import wait_until
from tests.support.stack import BACKENDS_CONFIG, GATEWAY_CONFIG, Collector, ProcessorService

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory,
            kube: KubeCluster) -> Iterator[tuple[Collector, ProcessorService, Path]]:
    tmp = tmp_path_factory.mktemp("identity")
    (tmp / "node-tokens").write_text("node-a token-a\nnode-b token-b\n")
    for node in ("node-a", "node-b"):
        (tmp / f"token-{node}").write_text(f"token-{node[-1]}\n")
    config = tmp / "pipeline.yaml"
    config.write_text(yaml.safe_dump({
        "service": {"identity": {"node_token_file": str(tmp / "node-tokens")}},
        "processors": [
            {"type": "k8s_attributes", "config": {"mode": "gateway", "wait_for_sync_seconds": 20,
                                                  "kubeconfig": str(kube.kubeconfig),
                                                  "hold_seconds": 0}},
            {"type": "falco_rules", "config": {}},
            {"type": "noise_control", "config": {}},
        ]}))
    tls = GatewayTls.create(tmp / "pki")
    col = Collector(tmp / "otelcol", [BACKENDS_CONFIG, GATEWAY_CONFIG], tls=tls)
    proc = ProcessorService(tmp / "processor", export=col.otlp_grpc,
                            extra_args=["--config", str(config)],
                            listen_tls=tls.processor_args(), export_tls=tls.processor_export_args())
    col.env["OTELGUARD_PROCESSOR_ENDPOINT"] = proc.endpoint
    proc.start()
    try:
        col.start()
        yield col, proc, tmp
    finally:
        col.stop()
        proc.stop()


def _batch(tmp: Path, node: str, cid: str, uid: str) -> ExportLogsServiceRequest:
    signer = ResourceSigner(node, str(tmp / f"token-{node}"))
    builder = OtlpBuilder(NodeIdentity(node, node, ""), signer=signer)
    now = time.time_ns()
    ev = Event(sc.EV_PROCESS_EXEC, now, 4242, 4242, "execve", 0, container_id=cid, pod_uid=uid,
               process_start_ns=now, attrs={sc.PROCESS_EXECUTABLE_PATH: "/usr/bin/id",
                                            sc.PROCESS_EXECUTABLE_NAME: "id",
                                            sc.LOG_RECORD_UID: f"{node}-{cid[:8]}"})
    return builder.logs(([ev]))


def _resources(col: Collector, cid: str, processed: bool = True
               ) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Resources of ``cid`` the Collector exported: the processor's output (``processed``), or
    what the gateway sent to the processor (the tap sees both)."""
    def attrs(kvs: list[dict[str, Any]]) -> dict[str, Any]:
        return {kv["key"]: next(iter(kv["value"].values()), None) for kv in kvs}
    out = []
    for line in col.tap_lines():
        for rl in line.get("resourceLogs", []):
            res = attrs(rl["resource"].get("attributes", []))
            if res.get(sc.CONTAINER_ID) == cid and (sc.SENDER_VERIFIED in res) == processed:
                recs = [attrs(r.get("attributes", [])) for sl in rl.get("scopeLogs", [])
                        for r in sl.get("logRecords", [])]
                out.append((res, recs))
    return out


def test_signed_batch_verified_and_forged_pod_claim_detected(
        gateway: tuple[Collector, ProcessorService, Path], kube: KubeCluster) -> None:
    from kubernetes import config as kube_config

    col, proc, tmp = gateway
    admin = kube_config.new_client_from_config(config_file=str(kube.kubeconfig))  # type: ignore[no-untyped-call]
    cid = new_container_id()
    world = make_world(admin, cid)  # its pod runs on node-a
    assert col.tls is not None
    ch, metadata = col.tls.agent_channel(col.agents_grpc)
    with ch:
        stub = LogsServiceStub(ch)
        stub.Export(_batch(tmp, "node-a", cid, world.uid), timeout=10, metadata=metadata)  # type: ignore[no-untyped-call]

        def honest() -> list[dict[str, Any]]:
            return [res for res, _ in _resources(col, cid)
                    if res.get(sc.SENDER_NODE) == "node-a"
                    and res.get(sc.STREAM) == sc.STREAM_EVENT]
        assert wait_until(lambda: len(honest()) == 1, 60), (proc.log_tail(), col.log_tail())
        (res,) = honest()
        # the gateway passed the agent's stamp through unchanged
        sent = [r for r, _ in _resources(col, cid, processed=False)]
        assert sent and all(r[sc.SENDER_NODE] == "node-a" and r[sc.SENDER_MAC] for r in sent)
        assert res[sc.SENDER_VERIFIED] is True
        assert sc.SENDER_MAC not in res and sc.SENDER_NONCE not in res
        assert res[sc.K8S_POD_NAME] == world.pod and res[sc.K8S_NODE_NAME] == "node-a"

        # node-b's agent (its own valid token) claims node-a's container
        stub.Export(_batch(tmp, "node-b", cid, world.uid), timeout=10, metadata=metadata)  # type: ignore[no-untyped-call]

        def detections() -> list[tuple[dict[str, Any], dict[str, Any]]]:
            return [(res, rec) for res, recs in _resources(col, cid) for rec in recs
                    if rec.get(sc.SECURITY_RULE_NAME) == RULE]
        assert wait_until(lambda: len(detections()) == 1, 60), (proc.log_tail(), col.log_tail())
    (det_res, det) = detections()[0]
    assert det_res[sc.STREAM] == sc.STREAM_DETECTION
    assert det_res[sc.SENDER_NODE] == "node-b" and det_res[sc.SENDER_VERIFIED] is True
    assert det_res[sc.K8S_NODE_NAME] == "node-a" and det_res[sc.K8S_POD_NAME] == world.pod
    assert det[sc.SECURITY_RULE_PRIORITY] == "CRITICAL"
    assert det[sc.SENDER_NODE] == "node-b"
    # the forged batch's own records were kept (with the real pod's attributes)
    # (raw events and detections leave the Collector through separate queues)
    def kept() -> list[dict[str, Any]]:
        return [res for res, _ in _resources(col, cid)
                if res.get(sc.SENDER_NODE) == "node-b" and res.get(sc.STREAM) == sc.STREAM_EVENT]
    assert wait_until(lambda: len(kept()) == 1, 60), col.log_tail()
    assert kept()[0][sc.K8S_NODE_NAME] == "node-a" and kept()[0][sc.SENDER_VERIFIED] is True
