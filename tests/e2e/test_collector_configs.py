"""The Collector configs in otel-config/ and deploy/, validated and run by the built Collector."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any, Iterator

import grpc
import pytest
import yaml
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.logs.v1.logs_pb2 import ResourceLogs

from otelguard import semconv as sc
from tests.e2e.scenario import Scenario, send
from tests.support.certs import GatewayTls, write
from tests.support.polling import wait_until
from tests.support.stack import (
    BACKENDS_CONFIG, GATEWAY_CONFIG, ROOT, Collector, collector_binary, free_port, validate_collector_config,
)

pytestmark = pytest.mark.e2e

DEPLOY_COLLECTOR = ROOT / "deploy" / "collector.yaml"


def deploy_documents() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(DEPLOY_COLLECTOR.read_text()) if d]


@pytest.mark.parametrize("configs", [[BACKENDS_CONFIG], [BACKENDS_CONFIG, GATEWAY_CONFIG]],
                         ids=["backends", "backends+gateway"])
def test_config_validates(configs: list[Path]) -> None:
    res = validate_collector_config(configs)
    assert res.returncode == 0, res.stderr


def test_deploy_collector_config_validates(tmp_path: Path) -> None:
    """The Kubernetes gateway: its ConfigMap files (the chart's overrides.yaml from its values
    last), in the order the Deployment passes them."""
    docs = deploy_documents()
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap"]
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    files = [a.split("=", 1)[1] for a in container["args"] if a.startswith("--config=")]
    assert files == ["/etc/otelcol/backends.yaml", "/etc/otelcol/gateway-k8s.yaml", "/etc/otelcol/overrides.yaml"]
    paths = []
    for f in files:
        path = tmp_path / Path(f).name
        path.write_text(cm["data"][path.name])
        paths.append(path)
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    res = validate_collector_config(paths, env)
    assert res.returncode == 0, res.stderr


def test_deploy_collector_config_matches_otel_config() -> None:
    """deploy/collector.yaml embeds the checked-in configs verbatim (no drift)."""
    (cm,) = [d for d in deploy_documents() if d["kind"] == "ConfigMap"]
    assert cm["data"]["backends.yaml"] == BACKENDS_CONFIG.read_text(), \
        "run python3 scripts/render_deploy.py (copies backends.yaml into the chart, renders deploy/)"
    assert cm["data"]["gateway-k8s.yaml"] == (ROOT / "deploy" / "collector" / "gateway-k8s.yaml").read_text()


def test_validate_rejects_a_broken_config(tmp_path: Path) -> None:
    """The validation above can fail: a misspelt OTTL path is caught."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(BACKENDS_CONFIG.read_text().replace('log.event_name != ""', 'log.event_nam != ""'))
    res = validate_collector_config([bad])
    assert res.returncode != 0
    assert "event_nam" in res.stderr


GATEWAY_K8S_CONFIG = ROOT / "deploy" / "collector" / "gateway-k8s.yaml"
QUEUE_STORAGE = "file_storage/queues"
# The exporters that carry detections (or the events they come from), by config.
PERSISTENT_EXPORTERS = {
    "local": ["otlp_grpc/processor", "otlp_http/loki_detections", "otlp_grpc/jaeger"],
    "k8s": ["load_balancing/processor", "otlp_http/loki_detections", "otlp_grpc/jaeger"],
}


def resolved_config(configs: list[Path], env: dict[str, str] | None = None) -> dict[str, Any]:
    """The configuration the Collector would run, every default filled in and ${env:...}
    resolved (``print-config``, which validates too)."""
    args = [str(collector_binary()), "print-config", "--mode", "unredacted", "--format", "json"]
    for c in configs:
        args += ["--config", str(c)]
    res = subprocess.run(args, capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})})
    assert res.returncode == 0, res.stderr
    return dict(json.loads(res.stdout))


def mib(quantity: str) -> int:
    """A Kubernetes memory quantity in MiB (the suffixes deploy/ uses)."""
    for suffix, factor in (("Gi", 1024), ("Mi", 1)):
        if quantity.endswith(suffix):
            return int(quantity[: -len(suffix)]) * factor
    raise ValueError(quantity)


@pytest.mark.parametrize("topology", ["local", "k8s"])
def test_detection_hops_queue_on_disk_and_never_give_up(tmp_path: Path, topology: str) -> None:
    """Every exporter that carries detections keeps its queue in file_storage (in the directory
    the env names) and retries until the next hop takes the data; no pipeline feeding one of
    them holds records in the in-memory batch processor, which answers OK before they are
    queued. The k8s load balancer's per-replica exporters have no queue and no retry of their
    own (a record leaves the disk only once a replica took it)."""
    queue_dir = tmp_path / "queues"
    gateway = GATEWAY_CONFIG if topology == "local" else GATEWAY_K8S_CONFIG
    cfg = resolved_config([BACKENDS_CONFIG, gateway], {"OTELGUARD_COLLECTOR_QUEUE_DIR": str(queue_dir)})
    storage = cfg["extensions"][QUEUE_STORAGE]
    assert QUEUE_STORAGE in cfg["service"]["extensions"]
    assert storage["directory"] == storage["compaction"]["directory"] == str(queue_dir)
    assert storage["create_directory"] is True and storage.get("fsync", False) is False   # omitted when false
    assert storage["max_size"] > 0
    for name in PERSISTENT_EXPORTERS[topology]:
        exp = cfg["exporters"][name]
        assert exp["sending_queue"]["storage"] == QUEUE_STORAGE, name
        assert exp["sending_queue"]["batch"]["min_size"] >= 1024, name   # batching moved into the queue
        retry = exp["retry_on_failure"]
        assert retry["enabled"] is True and retry["max_elapsed_time"] == 0, (name, retry)
        assert 0 < retry["max_interval"] <= 10e9, (name, retry)
    for name, pipeline in cfg["service"]["pipelines"].items():
        if set(pipeline.get("exporters", [])) & set(PERSISTENT_EXPORTERS[topology]):
            assert "batch" not in pipeline.get("processors", []), name
    if topology == "k8s":
        otlp = cfg["exporters"]["load_balancing/processor"]["protocol"]["otlp"]
        assert otlp["sending_queue"] is None and otlp["retry_on_failure"]["enabled"] is False


def test_memory_limiter_is_sized_from_the_environment() -> None:
    """limit_mib/spike_limit_mib come from the env (no percentage of the host's memory); the
    defaults are deploy/collector.yaml's values."""
    cfg = resolved_config([BACKENDS_CONFIG], {"OTELGUARD_COLLECTOR_MEMORY_LIMIT_MIB": "800",
                                              "OTELGUARD_COLLECTOR_MEMORY_SPIKE_MIB": "200"})
    limiter = cfg["processors"]["memory_limiter"]
    assert (limiter["limit_mib"], limiter["spike_limit_mib"]) == (800, 200)
    assert limiter["limit_percentage"] == limiter["spike_limit_percentage"] == 0
    defaults = resolved_config([BACKENDS_CONFIG], {})["processors"]["memory_limiter"]
    (deployment,) = [d for d in deploy_documents() if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert str(defaults["limit_mib"]) == env["OTELGUARD_COLLECTOR_MEMORY_LIMIT_MIB"]
    assert str(defaults["spike_limit_mib"]) == env["OTELGUARD_COLLECTOR_MEMORY_SPIKE_MIB"]
    for cfg_pipeline in resolved_config([BACKENDS_CONFIG, GATEWAY_CONFIG])["service"]["pipelines"].values():
        if "otlp" in cfg_pipeline["receivers"] or "otlp/agents" in cfg_pipeline["receivers"]:
            assert cfg_pipeline["processors"][0] == "memory_limiter"


def test_deploy_sizes_memory_and_queue_volume_from_the_container() -> None:
    """The sizing rule (docs/stack.md#persistent-queues): limit_mib = 80% and spike_limit_mib = 20%
    of limits.memory, GOMEMLIMIT = limit_mib; the queue directory is a volume big enough for
    every queue file at max_size plus one compaction copy."""
    docs = deploy_documents()
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    limit = mib(container["resources"]["limits"]["memory"])
    assert int(env["OTELGUARD_COLLECTOR_MEMORY_LIMIT_MIB"]) == int(limit * 0.8)
    assert int(env["OTELGUARD_COLLECTOR_MEMORY_SPIKE_MIB"]) == round(limit * 0.2)
    assert env["GOMEMLIMIT"] == f'{env["OTELGUARD_COLLECTOR_MEMORY_LIMIT_MIB"]}MiB'

    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == env["OTELGUARD_COLLECTOR_QUEUE_DIR"]]
    assert not mount.get("readOnly")
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    cfg = resolved_config([BACKENDS_CONFIG, GATEWAY_K8S_CONFIG])
    files = {(name, kind.split("/")[0]) for kind, p in cfg["service"]["pipelines"].items()
             for name in p["exporters"] if name in PERSISTENT_EXPORTERS["k8s"]}
    max_size_mib = cfg["extensions"][QUEUE_STORAGE]["max_size"] // (1 << 20)
    assert len(files) == 4
    assert mib(volume["emptyDir"]["sizeLimit"]) >= (len(files) + 1) * max_size_mib


@pytest.mark.parametrize(("env", "error"), [
    ({"OTELGUARD_COLLECTOR_MEMORY_LIMIT_MIB": "400", "OTELGUARD_COLLECTOR_MEMORY_SPIKE_MIB": "400"},
     "'spike_limit_mib' must be smaller than 'limit_mib'"),
    ({"OTELGUARD_COLLECTOR_QUEUE_FSYNC": "sometimes"}, "'fsync' expected type 'bool'"),
], ids=["spike-not-below-limit", "fsync-not-a-bool"])
def test_validate_rejects_bad_sizing_values(env: dict[str, str], error: str) -> None:
    """The env-derived keys are checked by the Collector itself, not only substituted."""
    res = validate_collector_config([BACKENDS_CONFIG], env)
    assert res.returncode != 0
    assert error in res.stderr, res.stderr


class RecordingLogsService(logs_service_pb2_grpc.LogsServiceServicer):
    """Stands where the otelguard processor service sits in pipeline (a); records batch sizes
    and the ``authorization`` each call carried."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.authorization: set[str] = set()
        self.lock = threading.Lock()

    def Export(self, request: logs_service_pb2.ExportLogsServiceRequest,
               context: grpc.ServicerContext) -> logs_service_pb2.ExportLogsServiceResponse:
        n = sum(len(sl.log_records) for rl in request.resource_logs for sl in rl.scope_logs)
        with self.lock:
            self.sizes.append(n)
            self.authorization.update(str(v) for k, v in context.invocation_metadata()
                                      if k == "authorization")
        return logs_service_pb2.ExportLogsServiceResponse()


@pytest.fixture
def gateway_tls(tmp_path: Path) -> GatewayTls:
    return GatewayTls.create(tmp_path / "pki")


@pytest.fixture
def processor_double(gateway_tls: GatewayTls) -> Iterator[tuple[str, RecordingLogsService]]:
    service = RecordingLogsService()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(service, server)  # type: ignore[no-untyped-call]
    port = free_port()
    root = gateway_tls.pki.root
    server.add_secure_port(f"127.0.0.1:{port}", grpc.ssl_server_credentials(
        [((root / "server.key").read_bytes(), (root / "server.crt").read_bytes())]))
    server.start()
    yield f"127.0.0.1:{port}", service
    server.stop(grace=None)


def small_request(i: int, records: int) -> logs_service_pb2.ExportLogsServiceRequest:
    rl = ResourceLogs()
    rl.resource.attributes.add(key=sc.CONTAINER_ID, value={"string_value": f"{i:064x}"})
    sl = rl.scope_logs.add()
    for j in range(records):
        rec = sl.log_records.add(time_unix_nano=time.time_ns(), severity_number=9,
                                 event_name=sc.EV_PROCESS_EXEC)
        rec.body.string_value = f"exec {i}/{j}"
    return logs_service_pb2.ExportLogsServiceRequest(resource_logs=[rl])


def test_gateway_batches_before_the_processor_service(
        tmp_path: Path, processor_double: tuple[str, RecordingLogsService],
        gateway_tls: GatewayTls) -> None:
    """Pipeline (a): 300 agent calls of 10 records reach the processor service as a few large
    batches (sending_queue batch min_size 1024), which is what makes Python's per-call cost
    affordable. Measures and prints the ratio."""
    endpoint, service = processor_double
    col = Collector(tmp_path, [BACKENDS_CONFIG, GATEWAY_CONFIG], {"OTELGUARD_PROCESSOR_ENDPOINT": endpoint},
                    tls=gateway_tls)
    col.start()
    try:
        calls, per_call = 300, 10
        channel, metadata = gateway_tls.agent_channel(col.agents_grpc)
        with channel as ch:
            stub = logs_service_pb2_grpc.LogsServiceStub(ch)  # type: ignore[no-untyped-call]
            # in flight together, as many agents send: sent one by one on a loaded machine each
            # call can take longer than 1/100 of the 200 ms flush_timeout, and the batches then
            # flush on time, not on size
            futures = [stub.Export.future(small_request(i, per_call), timeout=20,
                                          metadata=metadata) for i in range(calls)]
            for f in futures:
                f.result()
        assert wait_until(lambda: sum(service.sizes) == calls * per_call, 20), service.sizes
    finally:
        col.stop()
    print(f"\n{calls} agent calls x {per_call} records -> {len(service.sizes)} processor calls "
          f"(sizes {service.sizes}); {calls / len(service.sizes):.0f}x fewer calls")
    assert service.authorization == {"Bearer processor-token"}  # the processor's token, over TLS
    assert len(service.sizes) <= calls // 20
    assert max(service.sizes) >= 1024


def test_gateway_refuses_agents_without_tls_or_a_good_token(
        tmp_path: Path, processor_double: tuple[str, RecordingLogsService],
        gateway_tls: GatewayTls) -> None:
    """The agents receiver: no token or a wrong one is UNAUTHENTICATED, a plaintext client never
    gets through; a token added to the tokens file is accepted without a restart."""
    endpoint, service = processor_double
    col = Collector(tmp_path, [BACKENDS_CONFIG, GATEWAY_CONFIG], {"OTELGUARD_PROCESSOR_ENDPOINT": endpoint},
                    tls=gateway_tls)
    col.start()
    try:
        channel, good = gateway_tls.agent_channel(col.agents_grpc)
        with channel as ch:
            stub = logs_service_pb2_grpc.LogsServiceStub(ch)  # type: ignore[no-untyped-call]
            for metadata in ((), (("authorization", "Bearer not-a-token"),)):
                with pytest.raises(grpc.RpcError) as refused:
                    stub.Export(small_request(0, 1), timeout=10, metadata=metadata)
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            write(gateway_tls.pki.root / "agent-tokens", b"agent-token-2\nnew-agent-token\n")
            rotated = (("authorization", "Bearer new-agent-token"),)
            assert wait_until(lambda: _accepted(stub, rotated), 30)
            stub.Export(small_request(1, 1), timeout=10, metadata=good)
        with grpc.insecure_channel(col.agents_grpc) as ch:
            stub = logs_service_pb2_grpc.LogsServiceStub(ch)  # type: ignore[no-untyped-call]
            with pytest.raises(grpc.RpcError) as refused:
                stub.Export(small_request(2, 1), timeout=10, metadata=good)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert wait_until(lambda: sum(service.sizes) == 2, 20), service.sizes
    finally:
        col.stop()


def _accepted(stub: Any, metadata: tuple[tuple[str, str], ...]) -> bool:
    try:
        stub.Export(small_request(3, 1), timeout=10, metadata=metadata)
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
        return False
    return True


def test_severity_valve_drops_events_but_never_detections(tmp_path: Path) -> None:
    """OTELGUARD_LOKI_MIN_SEVERITY=13 keeps WARN+ events only; detections bypass the valve."""
    col = Collector(tmp_path, [BACKENDS_CONFIG], {"OTELGUARD_LOKI_MIN_SEVERITY": "13"})
    col.start()
    try:
        scenario = Scenario()
        send(col, scenario)

        def exported() -> dict[str, int]:
            counts: dict[str, int] = {}
            for doc in col.tap_lines():
                for rl in doc.get("resourceLogs", []):
                    attrs = {a["key"]: a["value"].get("stringValue") for a in rl["resource"]["attributes"]}
                    n = sum(len(sl.get("logRecords", [])) for sl in rl.get("scopeLogs", []))
                    counts[str(attrs.get(sc.STREAM))] = counts.get(str(attrs.get(sc.STREAM)), 0) + n
            return counts
        assert wait_until(lambda: exported().get(sc.STREAM_DETECTION) == 2, 20), exported()
        time.sleep(1.0)   # the events' batch would have flushed by now (200 ms)
        assert exported().get(sc.STREAM_EVENT, 0) == 0, exported()
    finally:
        col.stop()
