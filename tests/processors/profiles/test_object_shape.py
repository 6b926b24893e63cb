"""The WorkloadProfile object shape without an API server: the CRD's schema has a place for
every field of the profile document (and nothing else), documents survive the round trip to
objects, object names are valid and distinct, and an object stays under the size bound."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from otelguard.processors.profiles import Config, ProfilesStage
from otelguard.processors.profiles.document import (
    Approval, Evidence, Learning, ProcessEntry, ProfileDocument, Spec, Status, Taint, to_document,
)
from otelguard.processors.profiles.objects import (
    MAX_OBJECT_BYTES, ObjectError, from_object, object_name, to_object,
)

from tests.support.fake_time import FakeTime

from . import events as ev

CRD_FILE = Path(__file__).resolve().parents[3] / "src/otelguard/processors/profiles/crd.yaml"
CHART_COPY = Path(__file__).resolve().parents[3] / \
    "deploy/helm/otelguard/crds/workloadprofiles.otelguard.dev.yaml"
WORKLOAD = "k8s/shop/Deployment/cart/web"


def _schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD_FILE.read_text())
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _fields(cls: Any) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _learned_document() -> ProfileDocument:
    clock = FakeTime(ev.T0)
    stage = ProfilesStage(Config(learn_seconds=800, bucket_seconds=100), clock.clock)
    ev.learn_to_the_end(stage, clock, ev.execve("/bin/sh", "/usr/bin/python3", "sh", "-c", "id"))
    p = stage.profile(WORKLOAD)
    assert p is not None and p.state == "learned" and p.quarantine
    stage.approve(WORKLOAD, "alice")
    return to_document(p)


def test_the_crd_schema_has_exactly_the_documents_fields() -> None:
    props = _schema()["properties"]
    assert set(props["spec"]["properties"]) == _fields(Spec) | {"workload"}
    assert set(props["spec"]["properties"]["processes"]["items"]["properties"]) == \
        _fields(ProcessEntry)
    status = props["status"]["properties"]
    assert set(status) == _fields(Status) | {"revision", "allowed"}
    assert set(status["learning"]["properties"]) == _fields(Learning)
    assert set(status["approval"]["properties"]) == _fields(Approval)
    assert set(status["tainted"]["items"]["properties"]) == _fields(Taint)
    for key in ("entries", "quarantine"):
        assert set(status[key]["items"]["properties"]) == _fields(Evidence)


def test_a_document_survives_the_round_trip_and_matches_the_schema() -> None:
    doc = _learned_document()
    obj = to_object(doc, "otelguard")
    jsonschema.validate(obj, _schema())
    assert obj["status"]["allowed"] == sum(len(getattr(doc.spec, f)) for f in _fields(Spec))
    assert from_object(json.loads(json.dumps(obj))) == doc


def test_names_are_dns_subdomains_and_distinct() -> None:
    keys = [WORKLOAD, WORKLOAD.upper(), "host/node-1/unit/nginx.service",
            "image/registry.local:5000/shop/web", "host/n/exe/" + "x" * 400, "k8s/a_b/c"]
    names = [object_name(k) for k in keys]
    assert len(set(names)) == len(names)
    for name in names:
        assert len(name) <= 253 and re.fullmatch(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?", name), name


def test_an_object_not_named_for_its_workload_is_refused() -> None:
    obj = to_object(_learned_document(), "otelguard")
    obj["metadata"]["name"] = object_name("k8s/shop/Deployment/other/web")
    with pytest.raises(ObjectError, match="does not belong to spec.workload"):
        from_object(obj)
    del obj["spec"]["workload"]
    with pytest.raises(ObjectError, match="spec.workload is missing"):
        from_object(obj)


def test_a_huge_profile_is_trimmed_below_the_bound_keeping_its_spec() -> None:
    doc = _learned_document()
    many = tuple(Evidence("dns", f"name-{i}.example", 3, tuple(f"pod-{j}" for j in range(64)),
                          tuple(range(24)), "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z",
                          "", "seen in 1 bucket") for i in range(1500))
    big = dataclasses.replace(doc, status=dataclasses.replace(doc.status, quarantine=many,
                                                              entries=many))
    obj = to_object(big, "otelguard")
    assert len(json.dumps(obj, separators=(",", ":"))) <= MAX_OBJECT_BYTES
    back = from_object(obj)
    assert back.spec == doc.spec and back.status.approval == doc.status.approval
    assert back.status.quarantine and not back.status.quarantine[0].instances


def test_the_charts_crd_is_the_packages() -> None:
    assert CHART_COPY.read_text() == CRD_FILE.read_text()
