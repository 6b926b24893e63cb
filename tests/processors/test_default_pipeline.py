"""The default pipeline of `otelguard processor` (falco_rules -> noise_control) in the service:
a real Falco stable rule fires on an exec received over OTLP/gRPC, repeats are throttled."""

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


def test_default_pipeline_detects_and_throttles() -> None:
    specs = default_specs(None)
    assert [s.type for s in specs] == ["falco_rules", "noise_control"]
    case = next(c for c in load_cases("stable_rules.yaml") if c["rule"] == RULE)
    with running_service(specs=specs) as run:
        for i in range(5):  # 5 execs (each its own uid: the same uid again is a retry)
            match = {**case["match"], "attrs": {**case["match"].get("attrs", {}),
                                                semconv.LOG_RECORD_UID: f"exec-{i}"}}
            code, _, _ = grpc_call(run.grpc_endpoint, batch_of(match).SerializeToString())
            assert code == grpc.StatusCode.OK
        wait_for(lambda: run.sink.log_record_count() >= 8,
                 what="5 events + the first 3 detections (the default burst)")
        records = [rec for req in run.sink.logs for _, _, rec in iter_log_records(req)]
        detections = [attrs_dict(r.attributes) for r in records
                      if r.event_name == semconv.EV_DETECTION
                      and semconv.NOISE_THROTTLE not in attrs_dict(r.attributes)]
        assert [d[semconv.SECURITY_RULE_NAME] for d in detections] == [RULE] * 3
        assert [d[semconv.DETECTION_COUNT] for d in detections] == [1, 1, 1]
    # the throttle's start went out on the flush timer; stopping the service flushed its stop
    # record counting the 2 repeats past the burst
    records = [rec for req in run.sink.logs for _, _, rec in iter_log_records(req)]
    counts = sorted(attrs_dict(r.attributes)[semconv.DETECTION_COUNT] for r in records
                    if r.event_name == semconv.EV_DETECTION)
    assert counts == [0, 1, 1, 1, 2]


def test_rules_flag_fills_the_rules_field() -> None:
    specs = apply_rules(default_specs(None), ["/tmp/a.yaml", "/tmp/b.yaml"])
    assert specs[0].config.rules == ("/tmp/a.yaml", "/tmp/b.yaml")
    assert specs[1].type == "noise_control"
