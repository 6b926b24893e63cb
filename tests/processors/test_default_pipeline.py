"""The default pipeline of `otelguard processor` (falco_rules -> noise_control) in the service:
a real Falco stable rule fires on an exec received over OTLP/gRPC, repeats collapse."""

from __future__ import annotations

import grpc

from otelguard import semconv
from otelguard.otlp.messages import attrs_dict, iter_log_records
from otelguard.processors.default_pipeline import apply_rules, default_specs

from .detection.casefile import batch_of, load_cases
from tests.support.endpoints import grpc_call
from tests.support.polling import wait_for

from .service_fixtures import running_service

RULE = "Terminal shell in container"


def test_default_pipeline_detects_and_collapses() -> None:
    specs = default_specs(None)
    assert [s.type for s in specs] == ["falco_rules", "noise_control"]
    case = next(c for c in load_cases("stable_rules.yaml") if c["rule"] == RULE)
    with running_service(specs=specs) as run:
        for _ in range(3):
            code, _, _ = grpc_call(run.grpc_endpoint, batch_of(case["match"]).SerializeToString())
            assert code == grpc.StatusCode.OK
        wait_for(lambda: run.sink.log_record_count() >= 4, what="3 events + first detection")
        records = [rec for req in run.sink.logs for _, _, rec in iter_log_records(req)]
        detections = [attrs_dict(r.attributes) for r in records
                      if r.event_name == semconv.EV_DETECTION]
        assert [d[semconv.SECURITY_RULE_NAME] for d in detections] == [RULE]
        assert detections[0][semconv.DETECTION_COUNT] == 1
    # stopping the service flushed the held summary of the 2 repeats
    records = [rec for req in run.sink.logs for _, _, rec in iter_log_records(req)]
    counts = sorted(attrs_dict(r.attributes)[semconv.DETECTION_COUNT] for r in records
                    if r.event_name == semconv.EV_DETECTION)
    assert counts == [1, 2]


def test_rules_flag_fills_the_rules_field() -> None:
    specs = apply_rules(default_specs(None), ["/tmp/a.yaml", "/tmp/b.yaml"])
    assert specs[0].config.rules == ("/tmp/a.yaml", "/tmp/b.yaml")
    assert specs[1].type == "noise_control"
