"""Profiles as code: learning state survives a restart of the stage (its files), export ->
edit -> diff -> approve -> import round trip through ``otelguard profile``, a tampered approved
file is reported and not enforced, and a deviation leaves the processor service over OTLP."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
import yaml

from otelguard import semconv as S
from otelguard.cli import main as otelguard_main
from otelguard.processors.config import ProcessorSpec, ServiceSection
from otelguard.processors.noise import Config as NoiseConfig
from otelguard.processors.profiles import Config, ProfilesStage
from otelguard.processors.profiles.cli import approve
from otelguard.processors.profiles.document import file_name
from otelguard.processors.profiles.model import APPROVED, LEARNED, LEARNING
from otelguard.transport.security import INSECURE_SERVER

from tests.support.endpoints import grpc_call
from tests.support.fake_time import FakeTime
from tests.support.polling import wait_for

from ..service_fixtures import running_service
from . import events as ev

WORKLOAD = "k8s/shop/Deployment/cart/web"


def _config(directory: Path) -> Config:
    return Config(directory=str(directory), learn_seconds=800, bucket_seconds=100,
                  save_interval_seconds=3600)  # the sync is driven by hand


def _learn(tmp_path: Path, clock: FakeTime) -> ProfilesStage:
    stage = ProfilesStage(_config(tmp_path), clock.clock)
    stage.start()
    ev.learn_to_the_end(stage, clock)
    return stage


def test_learning_state_survives_a_restart_and_a_crash_loses_at_most_one_save_interval(
        tmp_path: Path) -> None:
    clock = FakeTime(ev.T0)
    first = ProfilesStage(_config(tmp_path), clock.clock)
    first.start()
    ev.benign_traffic(first)  # bucket 0
    first.shutdown()
    doc = yaml.safe_load((tmp_path / file_name(WORKLOAD)).read_text())
    assert doc["kind"] == "WorkloadProfile" and doc["status"]["state"] == LEARNING
    clock.now += 100
    second = ProfilesStage(_config(tmp_path), clock.clock)
    second.start()
    ev.benign_traffic(second)  # bucket 1: only with bucket 0's evidence from the file is it learned
    second.sync()  # the periodic save
    ev.benign_traffic(second, ev.dns("unsaved.example"), ev.dns("unsaved.example"))
    # a crash now (no shutdown): the next start reads what the last save wrote
    clock.now = ev.T0 + 801
    third = ProfilesStage(_config(tmp_path), clock.clock)
    third.start()
    third.sync()
    p = third.profile(WORKLOAD)
    assert p is not None and p.state == LEARNED
    assert p.spec["dns"] == ["db.shop.svc.cluster.local"] and p.spec["listen"] == ["8080/tcp"]
    assert "unsaved.example" not in p.candidates["dns"]
    second.shutdown()
    third.shutdown()


def test_export_edit_diff_approve_import_round_trip(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    clock = FakeTime(ev.T0)
    live, review = tmp_path / "live", tmp_path / "review"
    stage = _learn(live, clock)
    assert otelguard_main(["profile", "export", str(live), str(review)]) == 0
    exported = review / file_name(WORKLOAD)
    edited = tmp_path / "edited.yaml"
    doc = yaml.safe_load(exported.read_text())
    doc["spec"]["dns"].append("api.partner.example")  # the reviewer adds what learning missed
    edited.write_text(yaml.safe_dump(doc, sort_keys=False))
    capsys.readouterr()
    assert otelguard_main(["profile", "diff", str(exported), str(edited)]) == 1
    assert capsys.readouterr().out == "+ dns: api.partner.example\n"
    assert otelguard_main(["profile", "approve", str(edited), "--by", "bob"]) == 0
    assert otelguard_main(["profile", "import", str(edited), "--into", str(live)]) == 0
    assert otelguard_main(["profile", "list", str(live)]) == 0
    listed = capsys.readouterr().out
    assert f"{WORKLOAD} approved" in " ".join(listed.split())
    stage.sync()  # the running stage reads the file: a loaded profile wins
    p = stage.profile(WORKLOAD)
    assert p is not None and p.state == APPROVED and p.revision == 2 and p.enforcing
    quiet = ev.batch(ev.pod("d"), ev.dns("api.partner.example"), ev.listen(8080))
    assert ev.detections(stage.process(quiet)) == []
    (found,) = [a for a, _ in ev.detections(stage.process(ev.batch(ev.pod("d"), ev.listen(22))))]
    assert found[S.PROFILE_APPROVED_BY] == "bob" and found[S.PROFILE_REVISION] == 2
    stage.shutdown()


def test_a_tampered_approved_file_is_reported_and_not_enforced(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clock = FakeTime(ev.T0)
    stage = _learn(tmp_path, clock)
    path = tmp_path / file_name(WORKLOAD)
    approve(path, "alice")
    stage.sync()
    assert stage.drain(False) == []
    doc = yaml.safe_load(path.read_text())
    doc["spec"]["dns"].append("*")  # widened after approval, without a new approval
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    stage.sync()
    reports = [a for b in stage.drain(False) for a, _ in ev.detections(b)]
    assert [(r[S.SECURITY_RULE_NAME], r[S.SECURITY_RULE_PRIORITY]) for r in reports] == [
        ("Behaviour profile tampered", "CRITICAL")]
    p = stage.profile(WORKLOAD)
    assert p is not None and p.tampered and not p.enforcing
    assert ev.detections(stage.process(ev.batch(ev.pod("a"), ev.listen(22)))) == []
    assert otelguard_main(["profile", "list", str(tmp_path)]) == 0
    assert "TAMPERED" in capsys.readouterr().out
    stage.shutdown()


def test_approve_refuses_a_learning_and_a_tainted_profile(tmp_path: Path) -> None:
    clock = FakeTime(ev.T0)
    stage = ProfilesStage(_config(tmp_path), clock.clock)
    stage.start()
    req = ev.batch(ev.pod("a"), ev.dns("x.example"))
    stage.process(req)
    stage.sync()
    path = tmp_path / file_name(WORKLOAD)
    assert otelguard_main(["profile", "approve", str(path)]) == 1
    ev.rule_detection(req, "Launch Suspicious Network Tool in Container")
    stage.process(req)
    clock.now = ev.T0 + 801
    stage.sync()
    assert otelguard_main(["profile", "approve", str(path), "--by", "x"]) == 1
    assert otelguard_main(["profile", "approve", str(path), "--by", "x",
                           "--accept-taint"]) == 0
    stage.shutdown()


def test_a_deviation_leaves_the_processor_service_over_otlp(tmp_path: Path) -> None:
    """The stage in a real service (profiles under service.state_dir), behind OTLP/gRPC, with
    noise control after it."""
    profiles_dir = tmp_path / "profiles"
    profiles_dir.mkdir()
    hand_written = profiles_dir / file_name(WORKLOAD)
    hand_written.write_text(f"""apiVersion: otelguard.dev/v1alpha1
kind: WorkloadProfile
metadata:
  workload: {WORKLOAD}
spec:
  processes:
    - {{exe: /usr/bin/python3, parent: /usr/bin/tini}}
  dns: [db.shop.svc.cluster.local]
  listen: [8080/tcp]
status:
  state: learned
""")
    approve(hand_written, "carol")
    specs = [ProcessorSpec("profiles", "profiles", Config()),
             ProcessorSpec("noise_control", "noise_control", NoiseConfig())]
    service = ServiceSection(listen="127.0.0.1:0", metrics=None, flush_interval_seconds=0.2,
                             tls=INSECURE_SERVER, state_dir=str(tmp_path))
    with running_service(specs=specs, service=service) as svc:
        body = ev.batch(ev.pod("a"), ev.dns("db.shop.svc.cluster.local"),
                        ev.execve("/usr/bin/python3", "/usr/bin/tini", "python3", "/app/x.py"),
                        ev.execve("/bin/sh", "/usr/bin/python3", "sh", "-c", "id"),
                        ev.dns("c2.attacker.example")).SerializeToString()
        code, _, _ = grpc_call(svc.grpc_endpoint, body)
        assert code == grpc.StatusCode.OK
        wait_for(lambda: svc.sink.logs, 10, "the request forwarded")
        found = [a for req in svc.sink.logs for a, _ in ev.detections(req)]
        assert sorted((str(d[S.SECURITY_RULE_NAME]), d[S.PROFILE_APPROVED_BY]) for d in found) \
            == [("Unexpected DNS query", "carol"), ("Unexpected process launched", "carol")]
        assert all(d[S.DETECTION_COUNT] == 1 for d in found)  # noise control passed them
