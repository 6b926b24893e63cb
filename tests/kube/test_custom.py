"""otelguard.kube against a real kube-apiserver + etcd (tests/support/kube.py): the generic
custom-resource verbs, their errors, CRD install, and watch."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

from otelguard.kube import (
    AlreadyExists, Conflict, CustomResources, Forbidden, Invalid, KubeAccessError, NotFound,
    api_client_from, install_crd, load_crd,
)
from otelguard.kube.errors import ApiError, wrap
from tests.support.kube import KubeCluster
from tests.support.kube_world import make_namespace

CRD = Path(__file__).parent / "data" / "probe-crd.yaml"


def _probe(name: str, size: int = 1) -> dict[str, Any]:
    return {"kind": "TestProbe", "metadata": {"name": name}, "spec": {"size": size}}


@pytest.fixture(scope="module")
def probes(admin: Any) -> CustomResources:
    stored = install_crd(admin, CRD)
    assert stored["metadata"]["name"] == "testprobes.otelguard.dev"
    return CustomResources(admin, "testprobes")


@pytest.fixture
def ns(admin: Any) -> Iterator[str]:
    yield make_namespace(admin)


@pytest.mark.e2e
def test_create_get_list_replace_delete(probes: CustomResources, ns: str) -> None:
    made = probes.create(_probe("a", 1), ns)
    assert made["apiVersion"] == "otelguard.dev/v1alpha1" and made["metadata"]["namespace"] == ns
    probes.create(_probe("b", 2), ns)
    got = probes.get("a", ns)
    assert got["spec"] == {"size": 1}
    listed = probes.list(ns, page_size=1)  # two pages
    assert sorted(o["metadata"]["name"] for o in listed.items) == ["a", "b"]
    assert listed.resource_version
    assert {o["metadata"]["namespace"] for o in probes.list().items} >= {ns}  # all namespaces

    got["spec"]["size"] = 5
    replaced = probes.replace(got)
    assert replaced["spec"]["size"] == 5
    assert replaced["metadata"]["resourceVersion"] != got["metadata"]["resourceVersion"]

    probes.delete("a", ns)
    with pytest.raises(NotFound, match=f"get testprobes.otelguard.dev {ns}/a"):
        probes.get("a", ns)


@pytest.mark.e2e
def test_a_stale_resource_version_is_a_conflict(probes: CustomResources, ns: str) -> None:
    first = probes.create(_probe("c"), ns)
    probes.replace({**first, "spec": {"size": 2}})
    with pytest.raises(Conflict) as info:
        probes.replace({**first, "spec": {"size": 3}})  # written from the old version
    assert info.value.status == 409 and info.value.reason == "Conflict"
    with pytest.raises(Conflict):
        probes.patch_status("c", {"phase": "x"}, ns,
                            resource_version=first["metadata"]["resourceVersion"])
    with pytest.raises(Conflict):
        probes.delete("c", ns, resource_version=first["metadata"]["resourceVersion"])
    with pytest.raises(ValueError, match="no metadata.resourceVersion"):
        probes.replace(_probe("c") | {"metadata": {"name": "c", "namespace": ns}})
    assert probes.get("c", ns)["spec"]["size"] == 2


@pytest.mark.e2e
def test_update_rereads_and_retries_after_a_concurrent_write(probes: CustomResources,
                                                              ns: str) -> None:
    probes.create(_probe("d", 10), ns)
    calls: list[int] = []

    def add_one(obj: dict[str, Any]) -> dict[str, Any]:
        calls.append(obj["spec"]["size"])
        if len(calls) == 1:  # someone else writes between our read and our write
            other = probes.get("d", ns)
            probes.replace({**other, "spec": {"size": 100}})
        return {**obj, "spec": {"size": obj["spec"]["size"] + 1}}

    stored = probes.update("d", add_one, ns)
    assert stored is not None and stored["spec"]["size"] == 101  # the other write was kept
    assert calls == [10, 100]
    assert probes.update("d", lambda obj: None, ns) is None  # declined: nothing written


@pytest.mark.e2e
def test_status_subresource_is_written_apart_from_spec(probes: CustomResources, ns: str) -> None:
    made = probes.create(_probe("e") | {"status": {"phase": "ignored"}}, ns)
    assert "status" not in made  # create ignores status with a status subresource
    patched = probes.patch_status("e", {"phase": "ready", "seen": 3}, ns,
                                  resource_version=made["metadata"]["resourceVersion"])
    assert patched["status"] == {"phase": "ready", "seen": 3}
    patched["status"]["seen"] = 4
    assert probes.replace_status(patched)["status"]["seen"] == 4
    assert probes.patch_status("e", {"seen": None}, ns)["status"] == {"phase": "ready"}


@pytest.mark.e2e
def test_errors_name_the_request(probes: CustomResources, ns: str) -> None:
    probes.create(_probe("f"), ns)
    with pytest.raises(AlreadyExists, match="already exists"):
        probes.create(_probe("f"), ns)
    with pytest.raises(Invalid, match="spec.size"):
        probes.create(_probe("g", -1), ns)
    with pytest.raises(NotFound):
        probes.patch_status("nope", {"phase": "x"}, ns)
    with pytest.raises(ValueError, match="namespaced"):
        probes.get("f")


@pytest.mark.e2e
def test_forbidden_names_the_identity(kube: KubeCluster, admin: Any, probes: CustomResources,
                                      ns: str) -> None:
    from kubernetes import client

    core = client.CoreV1Api(admin)
    token = core.create_namespaced_service_account_token(
        "default", ns, {"spec": {"expirationSeconds": 600}}).status.token
    nobody = CustomResources(
        api_client_from(str(kube.kubeconfig_for_token(token, f"nobody-{ns}"))), "testprobes")
    with pytest.raises(Forbidden, match=f"system:serviceaccount:{ns}:default") as info:
        nobody.list(ns)
    assert info.value.status == 403


@pytest.mark.e2e
def test_watch_sees_changes_and_closes_at_once(probes: CustomResources, ns: str) -> None:
    start = probes.list(ns).resource_version
    seen: list[tuple[str, str]] = []
    watch = probes.watch(ns, resource_version=start, timeout_seconds=60)
    got_two = threading.Event()

    def read() -> None:
        for event_type, obj in watch:
            if event_type != "BOOKMARK":
                seen.append((event_type, obj["metadata"]["name"]))
            if len(seen) == 2:
                got_two.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    made = probes.create(_probe("w"), ns)
    probes.replace({**made, "spec": {"size": 9}})
    assert got_two.wait(20), seen
    assert seen == [("ADDED", "w"), ("MODIFIED", "w")]
    watch.close()
    reader.join(5)
    assert not reader.is_alive()


@pytest.mark.e2e
def test_installing_again_replaces_and_stays_established(admin: Any,
                                                         probes: CustomResources) -> None:
    crd = load_crd(CRD)
    crd["spec"]["versions"][0]["additionalPrinterColumns"] = [
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"}]
    stored = install_crd(admin, crd)
    assert stored["spec"]["versions"][0]["additionalPrinterColumns"][0]["name"] == "Phase"


def test_load_crd_rejects_other_documents(tmp_path: Path) -> None:
    bad = tmp_path / "x.yaml"
    bad.write_text("kind: ConfigMap\n")
    with pytest.raises(ValueError, match="CustomResourceDefinition"):
        load_crd(bad)


def test_unreachable_configuration_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KubeAccessError, match="nope.kubeconfig"):
        api_client_from(str(tmp_path / "nope.kubeconfig"))


def test_client_exceptions_are_wrapped_by_status_and_reason() -> None:
    from kubernetes.client.exceptions import ApiException

    exc = ApiException(status=409, reason="Conflict")
    exc.body = '{"kind":"Status","reason":"AlreadyExists","message":"x \\"a\\" already exists"}'
    err = wrap(exc, "create things ns/a")
    assert isinstance(err, AlreadyExists) and str(err) == 'create things ns/a: x "a" already exists'
    plain = wrap(ApiException(status=500, reason="Internal"), "get x")
    assert type(plain) is ApiError and plain.status == 500
    assert isinstance(wrap(ConnectionError("refused"), "get x"), ApiError)
    assert isinstance(wrap(ApiException(status=403, reason="Forbidden"), "get"), Forbidden)
