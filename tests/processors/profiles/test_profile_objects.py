"""Profiles as WorkloadProfile objects on a real kube-apiserver + etcd (tests/support/kube.py):
learning writes objects and survives restarts of the stage, ``otelguard profile ... --kube``
approves (then the stage enforces), a tampered approved object is reported and not enforced,
a concurrent write is a conflict the store resolves by reading, and the chart's Role is
exactly enough for the processor while a reviewer cannot approve."""

from __future__ import annotations

import dataclasses
import gc
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml

from otelguard import semconv as S
from otelguard.cli import main as otelguard_main
from otelguard.kube import CustomResources, Forbidden, api_client_from, install_crd
from otelguard.processors.profiles import Config, ProfilesStage
from otelguard.processors.profiles.cluster import ObjectStore
from otelguard.processors.profiles.cluster_cli import CRD_FILE
from otelguard.processors.profiles.config import StoreConfig
from otelguard.processors.profiles.document import file_name, load
from otelguard.processors.profiles.model import APPROVED, LEARNED, LEARNING
from otelguard.processors.profiles.objects import PLURAL, object_name

from tests.support.fake_time import FakeTime
from tests.support.kube import KubeCluster
from tests.support.kube_world import make_namespace
from tests.support.metrics import sample
from tests.support.polling import wait_for

from . import events as ev

pytestmark = [pytest.mark.e2e]

WORKLOAD = "k8s/shop/Deployment/cart/web"
NAME = object_name(WORKLOAD)


@pytest.fixture(scope="module")
def crd(admin: Any) -> None:
    install_crd(admin, CRD_FILE)


@pytest.fixture
def ns(admin: Any, crd: None) -> str:
    return make_namespace(admin)


@pytest.fixture
def objects(admin: Any) -> CustomResources:
    return CustomResources(admin, PLURAL)


@pytest.fixture
def stages(kube: KubeCluster, ns: str) -> Iterator[Callable[..., ProfilesStage]]:
    made: list[ProfilesStage] = []

    def make(clock: FakeTime, kubeconfig: Path | None = None) -> ProfilesStage:
        store = StoreConfig(kind="kube", namespace=ns,
                            kubeconfig=str(kubeconfig or kube.kubeconfig))
        stage = ProfilesStage(Config(store=store, learn_seconds=800, bucket_seconds=100,
                                     save_interval_seconds=3600), clock.clock)
        stage.start()
        made.append(stage)
        return stage

    yield make
    for stage in made:
        stage.shutdown()


def _kube_args(kube: KubeCluster, ns: str, kubeconfig: Path | None = None) -> list[str]:
    return ["--kube", "--kubeconfig", str(kubeconfig or kube.kubeconfig), "--namespace", ns]


def _learned(stages: Callable[..., ProfilesStage], clock: FakeTime) -> ProfilesStage:
    stage = stages(clock)
    ev.learn_to_the_end(stage, clock)
    return stage


def _until(stage: ProfilesStage, check: Callable[[Any], bool], what: str) -> None:
    """Sync the stage until its profile passes ``check`` (the watch delivers asynchronously)."""
    def ok() -> bool:
        stage.sync()
        p = stage.profile(WORKLOAD)
        return p is not None and check(p)
    wait_for(ok, 15, what)


def test_install_crd_command(kube: KubeCluster, admin: Any) -> None:
    assert otelguard_main(["profile", "install-crd", "--kube", "--kubeconfig",
                           str(kube.kubeconfig)]) == 0
    from kubernetes import client

    crd = client.ApiextensionsV1Api(admin).read_custom_resource_definition(
        "workloadprofiles.otelguard.dev")
    columns = [c.name for c in crd.spec.versions[0].additional_printer_columns]
    assert columns[:4] == ["Workload", "State", "Entries", "Approved-By"]


def test_learning_writes_an_object_and_survives_restarts(
        stages: Callable[..., ProfilesStage], objects: CustomResources, ns: str) -> None:
    clock = FakeTime(ev.T0)
    first = stages(clock)
    ev.benign_traffic(first)  # bucket 0
    first.shutdown()
    obj = objects.get(NAME, ns)
    assert obj["spec"]["workload"] == WORKLOAD and obj["status"]["state"] == LEARNING
    assert obj["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "otelguard"}
    assert {e["value"] for e in obj["status"]["entries"] if e["kind"] == "dns"} == {
        "db.shop.svc.cluster.local"}

    clock.now += 100
    second = stages(clock)  # a new processor: bucket 0's evidence comes from the object
    ev.benign_traffic(second)  # bucket 1
    second.sync()
    ev.benign_traffic(second, ev.dns("unsaved.example"), ev.dns("unsaved.example"))
    clock.now = ev.T0 + 801
    third = stages(clock)  # after a crash of the second (never shut down): the last save counts
    third.sync()
    p = third.profile(WORKLOAD)
    assert p is not None and p.state == LEARNED
    assert p.spec["dns"] == ["db.shop.svc.cluster.local"] and p.spec["listen"] == ["8080/tcp"]
    assert "unsaved.example" not in p.candidates["dns"]
    third.shutdown()
    stored = objects.get(NAME, ns)
    assert stored["status"]["state"] == LEARNED and stored["status"]["allowed"] == 2
    assert stored["spec"]["dns"] == ["db.shop.svc.cluster.local"]


def test_approve_with_the_cli_then_the_stage_enforces(
        kube: KubeCluster, stages: Callable[..., ProfilesStage], objects: CustomResources,
        ns: str, capsys: pytest.CaptureFixture[str]) -> None:
    clock = FakeTime(ev.T0)
    stage = _learned(stages, clock)
    args = _kube_args(kube, ns)
    assert otelguard_main(["profile", "approve", f"{ns}/{NAME}", "--by", "alice", *args]) == 0
    assert "approved" in capsys.readouterr().out
    _until(stage, lambda p: p.state == APPROVED and p.enforcing, "the approval adopted")
    p = stage.profile(WORKLOAD)
    assert p is not None and p.approval is not None and p.approval[0] == "alice"
    assert p.revision == objects.get(NAME, ns)["status"]["revision"] == 2

    quiet = ev.batch(ev.pod("d"), ev.dns("db.shop.svc.cluster.local"), ev.listen(8080))
    assert ev.detections(stage.process(quiet)) == []
    (found,) = [a for a, _ in ev.detections(stage.process(ev.batch(ev.pod("d"), ev.listen(22))))]
    assert found[S.SECURITY_RULE_NAME] == "Unexpected listening port"
    assert found[S.PROFILE_APPROVED_BY] == "alice"

    assert otelguard_main(["profile", "list", *args]) == 0
    assert f"{WORKLOAD} approved 2" in " ".join(capsys.readouterr().out.split())
    assert otelguard_main(["profile", "show", WORKLOAD, *args]) == 0  # by workload key
    assert "approved  by alice" in capsys.readouterr().out
    assert otelguard_main(["profile", "approve", f"{ns}/nope", "--by", "x", *args]) == 1
    assert "not found" in capsys.readouterr().err


def test_approve_refuses_a_learning_object(kube: KubeCluster,
                                           stages: Callable[..., ProfilesStage], ns: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    stage = stages(FakeTime(ev.T0))
    ev.benign_traffic(stage)
    stage.sync()
    assert otelguard_main(["profile", "approve", NAME, "--by", "x", *_kube_args(kube, ns)]) == 1
    assert "still learning" in capsys.readouterr().err


def test_a_tampered_approved_object_is_reported_and_not_enforced(
        kube: KubeCluster, stages: Callable[..., ProfilesStage], objects: CustomResources,
        ns: str, capsys: pytest.CaptureFixture[str]) -> None:
    clock = FakeTime(ev.T0)
    stage = _learned(stages, clock)
    assert otelguard_main(["profile", "approve", NAME, "--by", "alice",
                           *_kube_args(kube, ns)]) == 0
    _until(stage, lambda p: p.enforcing, "the approval adopted")
    assert stage.drain(False) == []
    # someone with write access to the spec, but not to status (the approval), widens it
    current = objects.get(NAME, ns)
    objects.patch(NAME, {"spec": {"dns": [*current["spec"]["dns"], "*"]}}, ns,
                  resource_version=current["metadata"]["resourceVersion"])
    _until(stage, lambda p: p.tampered, "the tampered object read")
    reports = [a for b in stage.drain(False) for a, _ in ev.detections(b)]
    assert [(r[S.SECURITY_RULE_NAME], r[S.SECURITY_RULE_PRIORITY]) for r in reports] == [
        ("Behaviour profile tampered", "CRITICAL")]
    p = stage.profile(WORKLOAD)
    assert p is not None and not p.enforcing
    assert ev.detections(stage.process(ev.batch(ev.pod("a"), ev.listen(22)))) == []
    assert otelguard_main(["profile", "list", *_kube_args(kube, ns)]) == 0
    assert "TAMPERED" in capsys.readouterr().out


def test_a_concurrent_write_is_read_not_overwritten(kube: KubeCluster, admin: Any,
                                                    objects: CustomResources, ns: str) -> None:
    clock = FakeTime(ev.T0)
    stage = ProfilesStage(Config(learn_seconds=800, bucket_seconds=100), clock.clock)
    ev.benign_traffic(stage)
    p = stage.profile(WORKLOAD)
    assert p is not None
    from otelguard.processors.profiles.document import to_document

    doc = to_document(p)
    store = ObjectStore(CustomResources(admin, PLURAL), ns)
    store.open()
    try:
        assert store.save(doc) and store.scan() == []  # our own write is not read back
        current = objects.get(NAME, ns)  # a human edits in between
        objects.patch_status(NAME, {"tainted": [{"rule": "by hand", "at": "2026-01-01T00:00:00Z"}]},
                             ns, resource_version=current["metadata"]["resourceVersion"])
        later = dataclasses.replace(doc, metadata=dataclasses.replace(doc.metadata, revision=7))
        assert store.save(later) is False  # 409: not overwritten
        (read,) = store.scan()
        assert [t.rule for t in read.status.tainted] == ["by hand"]
        assert store.save(later)  # on top of the version read
        assert objects.get(NAME, ns)["status"]["revision"] == 7
    finally:
        store.close()


def test_an_object_whose_name_is_not_its_workloads_is_refused(
        stages: Callable[..., ProfilesStage], objects: CustomResources, ns: str) -> None:
    before = sample("otelguard_profile_file_errors_total", op="load")
    objects.create({"kind": "WorkloadProfile", "metadata": {"name": "borrowed"},
                    "spec": {"workload": WORKLOAD, "dns": ["*"]}}, ns)
    stage = stages(FakeTime(ev.T0))
    assert stage.profile(WORKLOAD) is None
    assert sample("otelguard_profile_file_errors_total", op="load") == before + 1


def test_export_and_import_round_trip(kube: KubeCluster, admin: Any,
                                      stages: Callable[..., ProfilesStage], ns: str,
                                      objects: CustomResources, tmp_path: Path) -> None:
    clock = FakeTime(ev.T0)
    _learned(stages, clock).shutdown()
    args = _kube_args(kube, ns)
    assert otelguard_main(["profile", "approve", NAME, "--by", "alice", *args]) == 0
    assert otelguard_main(["profile", "export", str(tmp_path), *args]) == 0
    exported = tmp_path / file_name(WORKLOAD)
    doc = load(exported)
    assert doc.status.state == APPROVED and doc.metadata.revision == 2
    assert otelguard_main(["profile", "diff", NAME, str(exported), *args]) == 0
    other = make_namespace(admin)
    assert otelguard_main(["profile", "import", str(exported), *_kube_args(kube, other)]) == 0
    copy = objects.get(NAME, other)
    assert copy["status"]["approval"]["by"] == "alice" and copy["status"]["revision"] == 2
    edited = yaml.safe_load(exported.read_text())
    edited["spec"]["dns"].append("api.partner.example")
    exported.write_text(yaml.safe_dump(edited))
    assert otelguard_main(["profile", "import", str(exported), *_kube_args(kube, other)]) == 0
    assert objects.get(NAME, other)["spec"]["dns"][-1] == "api.partner.example"  # updated


def _apply_rbac(admin: Any, ns: str) -> dict[str, Any]:
    """The chart's profiles RBAC (helm template, profiles enabled), placed in ``ns``."""
    from kubernetes import client

    from tests.support.helm import require_helm, template

    require_helm()
    docs = template({"processor": {"profiles": {"enabled": True}}})
    rbac = client.RbacAuthorizationV1Api(admin)
    core = client.CoreV1Api(admin)
    by_kind: dict[str, Any] = {}
    for d in docs:
        if d["kind"] in ("Role", "RoleBinding", "ClusterRole") and \
                "profile" in d["metadata"]["name"]:
            d["metadata"]["namespace"] = ns
            d["metadata"]["name"] = f"{d['metadata']['name']}-{ns}"
            by_kind.setdefault(d["kind"], []).append(d)
    (role,), (binding,) = by_kind["Role"], by_kind["RoleBinding"]
    rbac.create_namespaced_role(ns, role)
    binding["roleRef"]["name"] = role["metadata"]["name"]
    binding["subjects"][0]["namespace"] = ns
    rbac.create_namespaced_role_binding(ns, binding)
    core.create_namespaced_service_account(ns, {"metadata": {"name": binding["subjects"][0]["name"]}})
    for cr in by_kind["ClusterRole"]:
        rbac.create_cluster_role(cr)
    return {"role": role, "binding": binding, "cluster_roles": by_kind["ClusterRole"]}


def _identity(kube: KubeCluster, admin: Any, ns: str, sa: str,
              cluster_role: str = "") -> Path:
    from kubernetes import client

    core = client.CoreV1Api(admin)
    if cluster_role:
        core.create_namespaced_service_account(ns, {"metadata": {"name": sa}})
        client.RbacAuthorizationV1Api(admin).create_namespaced_role_binding(ns, {
            "metadata": {"name": sa},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": cluster_role},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}]})
    token = core.create_namespaced_service_account_token(
        sa, ns, {"spec": {"expirationSeconds": 3600}}).status.token
    return kube.kubeconfig_for_token(token, f"{sa}-{ns}")


def test_the_charts_role_suffices_and_a_reviewer_cannot_approve(
        kube: KubeCluster, admin: Any, stages: Callable[..., ProfilesStage], ns: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    rbac = _apply_rbac(admin, ns)
    verbs = {(tuple(r["resources"]), tuple(r["verbs"])) for r in rbac["role"]["rules"]}
    assert verbs == {(("workloadprofiles",), ("get", "list", "watch", "create", "patch")),
                     (("workloadprofiles/status",), ("patch",))}
    processor = _identity(kube, admin, ns, rbac["binding"]["subjects"][0]["name"])
    clock = FakeTime(ev.T0)
    stage = stages(clock, processor)
    ev.learn_to_the_end(stage, clock)
    stage.shutdown()
    own = CustomResources(api_client_from(str(processor)), PLURAL)
    assert own.get(NAME, ns)["status"]["state"] == LEARNED  # written as the processor
    with pytest.raises(Forbidden):
        own.delete(NAME, ns)  # nothing beyond what the store uses
    again = stages(clock, processor)  # restarts under the same identity: reads it back
    assert (again.profile(WORKLOAD) or pytest.fail("not read")).state == LEARNED

    names = {cr["metadata"]["name"].rsplit(f"-{ns}", 1)[0].rsplit("-", 1)[-1]: cr
             for cr in rbac["cluster_roles"]}
    reviewer = _identity(kube, admin, ns, "reviewer", names["reviewer"]["metadata"]["name"])
    approver = _identity(kube, admin, ns, "approver", names["approver"]["metadata"]["name"])
    capsys.readouterr()
    assert otelguard_main(["profile", "list", *_kube_args(kube, ns, reviewer)]) == 0
    assert otelguard_main(["profile", "approve", NAME, "--by", "mallory",
                           *_kube_args(kube, ns, reviewer)]) == 1
    assert "forbidden" in capsys.readouterr().err.lower()
    assert otelguard_main(["profile", "approve", NAME, "--by", "alice",
                           *_kube_args(kube, ns, approver)]) == 0
    _until(again, lambda p: p.enforcing, "the approval adopted")


def _sockets() -> int:
    gc.collect()
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except FileNotFoundError:  # the listing's own descriptor, closed since
            pass
    return n


def test_a_stopped_stage_leaves_no_connection_open(kube: KubeCluster, ns: str) -> None:
    """Each kube-backed stage closes its watch and its client's connection pool on shutdown
    (a processor that reloads its configuration starts and stops stages for as long as it
    runs)."""
    clock = FakeTime(ev.T0)
    store = StoreConfig(kind="kube", namespace=ns, kubeconfig=str(kube.kubeconfig))
    before = _sockets()
    for _ in range(4):
        stage = ProfilesStage(Config(store=store, learn_seconds=800, bucket_seconds=100,
                                     save_interval_seconds=3600), clock.clock)
        stage.start()
        ev.benign_traffic(stage)
        stage.shutdown()
    assert _sockets() - before <= 0
