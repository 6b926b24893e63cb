"""Pipeline: order, per-stage timing and counters, failure isolation, flush of held records."""

from __future__ import annotations

from typing import Optional

from otelguard import semconv
from otelguard.processors.noise import Config as NoiseConfig
from otelguard.processors.noise import NoiseControl
from otelguard.otlp.messages import attrs_dict, count_records, iter_log_records, set_attr
from otelguard.processors.pipeline import Pipeline
from otelguard.processors.stage import Batch

from tests.support.metrics import sample
from . import samples


class Tagger:
    """Appends its name to a resource attribute, so order is visible in the output."""

    type_name = "tagger"

    def __init__(self, name: str, fail_after_touch: bool = False, returns: Optional[str] = None):
        self.name = name
        self.fail_after_touch = fail_after_touch
        self.returns = returns
        self.events: list[str] = []

    def start(self) -> None:
        self.events.append("start")

    def process(self, batch: Batch) -> Batch:
        for rl in getattr(batch, "resource_logs", []):
            current = attrs_dict(rl.resource.attributes).get(semconv.SERVICE_NAME, "")
            set_attr(rl.resource.attributes, semconv.SERVICE_NAME, f"{current}{self.name}",
                     overwrite=True)
            if self.fail_after_touch:
                del rl.scope_logs[:]  # damage first, then fail
                raise RuntimeError("boom")
        if self.returns == "none":
            return None  # type: ignore[return-value]
        return batch

    def shutdown(self) -> None:
        self.events.append("shutdown")


def _stage_in(stage: str) -> float:
    return sample("otelguard_processor_stage_records_in_total", stage=stage)


def _stage_failures(stage: str) -> float:
    return sample("otelguard_processor_stage_failures_total", stage=stage)


def _latency_count(stage: str) -> float:
    return sample("otelguard_pipeline_latency_seconds_count", stage=stage)
    return 0.0


def test_stages_run_in_order_with_metrics() -> None:
    a, b = Tagger("a"), Tagger("b")
    p = Pipeline([("p1_a", a), ("p1_b", b)])
    p.start()
    before = (_stage_in("p1_a"), _latency_count("p1_b"))
    result = p.process(samples.logs(4))
    assert attrs_dict(result.batch.resource_logs[0].resource.attributes)[semconv.SERVICE_NAME] \
        == "ab"
    assert (result.records_in, result.records_out, result.records_removed) == (4, 4, 0)
    assert _stage_in("p1_a") == before[0] + 4
    assert _latency_count("p1_b") == before[1] + 1
    assert p.shutdown() == []
    assert a.events == ["start", "shutdown"] and b.events == ["start", "shutdown"]


def test_failing_stage_lets_the_batch_through_unchanged() -> None:
    p = Pipeline([("p2_a", Tagger("a")), ("p2_bad", Tagger("x", fail_after_touch=True)),
                  ("p2_none", Tagger("n", returns="none")), ("p2_c", Tagger("c"))])
    p.start()
    failures = _stage_failures("p2_bad")
    result = p.process(samples.logs(3))
    assert result.failed_stages == ("p2_bad", "p2_none")
    assert count_records(result.batch) == 3  # the damage was undone
    # p2_none tagged "n" and then broke the contract: restored to the batch as it entered
    assert attrs_dict(result.batch.resource_logs[0].resource.attributes)[semconv.SERVICE_NAME] \
        == "ac"
    assert _stage_failures("p2_bad") == failures + 1
    # the pipeline keeps working
    assert p.process(samples.logs(2)).records_out == 2


def test_without_restore_failures_still_pass_the_batch_on() -> None:
    p = Pipeline([("p3_bad", Tagger("x", fail_after_touch=True)), ("p3_c", Tagger("c"))],
                 restore_on_failure=False)
    result = p.process(samples.logs(3))
    assert result.failed_stages == ("p3_bad",)
    assert attrs_dict(result.batch.resource_logs[0].resource.attributes)[semconv.SERVICE_NAME] \
        == "xc"


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_flush_runs_released_records_through_later_stages() -> None:
    clock = Clock()
    noise = NoiseControl(NoiseConfig(window_seconds=5, burst=1), clock)
    tail = Tagger("t")
    p = Pipeline([("p4_noise", noise), ("p4_tail", tail)])
    p.start()
    result = p.process(samples.logs(2, 4))
    assert result.records_removed == 3 and result.records_out == 3
    assert result.records_dropped == 0  # suppressed, not lost: the stop record counts them
    (started,) = p.flush()  # the throttle-start record, due at once
    ((_, _, rec),) = list(iter_log_records(started))
    assert attrs_dict(rec.attributes)[semconv.NOISE_THROTTLE] == semconv.NOISE_THROTTLE_START
    assert p.flush() == []
    clock.now = 10
    (released,) = p.flush()
    ((rl, _, rec),) = list(iter_log_records(released))
    assert attrs_dict(rec.attributes)[semconv.DETECTION_COUNT] == 3
    assert attrs_dict(rl.resource.attributes)[semconv.SERVICE_NAME] == "t"  # ran through tail
    p.process(samples.logs(0, 3))
    final = p.shutdown()
    assert sum(count_records(b) for b in final) == 2  # the open window's start and stop
    assert tail.events[-1] == "shutdown"


def test_stage_names_must_be_distinct() -> None:
    try:
        Pipeline([("x", Tagger("a")), ("x", Tagger("b"))])
    except ValueError as exc:
        assert "distinct" in str(exc)
    else:
        raise AssertionError("duplicate names accepted")


class AdditiveTagger(Tagger):
    """Declares itself additive: it only sets attributes, so the pipeline takes no snapshot."""

    additive = True


def test_additive_stage_is_not_rolled_back_but_an_ordinary_one_is() -> None:
    additive = Pipeline([("p9_add", AdditiveTagger("x", fail_after_touch=True))])
    plain = Pipeline([("p9_plain", Tagger("x", fail_after_touch=True))])
    for p in (additive, plain):
        p.start()
    before = samples.logs(3)
    res_add = additive.process(type(before)(resource_logs=before.resource_logs))
    res_plain = plain.process(type(before)(resource_logs=before.resource_logs))
    assert res_add.failed_stages == ("p9_add",) and res_plain.failed_stages == ("p9_plain",)
    # no snapshot before the additive stage: what it did before failing stays
    assert attrs_dict(res_add.batch.resource_logs[0].resource.attributes)[semconv.SERVICE_NAME] \
        .endswith("x")
    # the ordinary stage's damage is undone from its snapshot
    assert res_plain.batch == before


class Appender:
    """Declares appends_only: adds Resource groups after the last one, then may fail."""

    type_name = "appender"
    appends_only = True
    logs_only = True

    def __init__(self, groups: int, fail: Optional[str] = None) -> None:
        self.groups, self.fail = groups, fail

    def start(self) -> None:
        pass

    def process(self, batch: Batch) -> Batch:
        if not isinstance(batch, type(samples.logs(1))):
            return batch
        for _ in range(self.groups):
            rl = batch.resource_logs.add()
            set_attr(rl.resource.attributes, semconv.SERVICE_NAME, "appended")
            rl.scope_logs.add().log_records.add().event_name = "otelguard.test.appended"
        if self.fail == "raise":
            raise RuntimeError("boom after appending")
        if self.fail == "none":
            return None  # type: ignore[return-value]
        return batch

    def shutdown(self) -> None:
        pass


def test_an_appends_only_stage_that_fails_is_cut_back_to_the_groups_it_found() -> None:
    before = samples.logs(3)
    for fail in ("raise", "none"):
        p = Pipeline([(f"p10_{fail}", Appender(2, fail)), (f"p10_{fail}_ok", Appender(1))])
        p.start()
        res = p.process(type(before)(resource_logs=before.resource_logs))
        assert res.failed_stages == (f"p10_{fail}",)
        # the failed stage's two groups are gone, the next stage's one group is there
        assert len(res.batch.resource_logs) == len(before.resource_logs) + 1
        assert res.batch.resource_logs[:len(before.resource_logs)] == before.resource_logs
        assert res.records_out == count_records(before) + 1
    ok = Pipeline([("p10_ok", Appender(2))])
    ok.start()
    res = ok.process(type(before)(resource_logs=before.resource_logs))
    assert not res.failed_stages and len(res.batch.resource_logs) == len(before.resource_logs) + 2


def test_the_appends_only_stages_leave_what_they_found_byte_for_byte() -> None:
    # the contract the cheaper restore rests on (stage.py), on the real stages and a batch that
    # makes falco_rules detect and incidents fold: every group they found is unchanged after
    from otelguard.processors.detection.config import Config as RulesConfig
    from otelguard.processors.detection.processor import create as rules_stage
    from otelguard.processors.incidents.config import Config as IncidentsConfig
    from otelguard.processors.incidents.processor import IncidentsStage
    from tests.processors.detection.casefile import batch_of, load_cases

    case = next(c for c in load_cases("stable_rules.yaml")
                if c["rule"] == "Detect release_agent File Container Escapes")
    batch = batch_of(case["match"])
    stages = [rules_stage(RulesConfig()), IncidentsStage(IncidentsConfig(), clock=lambda: 1000.0)]
    for stage in stages:
        assert getattr(stage, "appends_only", False) and getattr(stage, "logs_only", False)
        stage.start()
        found = [rl.SerializeToString() for rl in batch.resource_logs]
        out = stage.process(batch)
        assert out is batch
        assert [rl.SerializeToString() for rl in batch.resource_logs[:len(found)]] == found
    assert len(batch.resource_logs) == 2  # falco_rules appended its detection group
    assert stages[1].drain(final=True)  # and incidents folded it (released from drain)


class DetectionMarker:
    """Declares changes_only detections: marks them, deletes one, appends a group, then fails."""

    type_name = "marker"
    changes_only = frozenset({semconv.EV_DETECTION})

    def start(self) -> None:
        pass

    def process(self, batch: Batch) -> Batch:
        for rl in batch.resource_logs:
            for sl in rl.scope_logs:
                dets = [i for i, r in enumerate(sl.log_records)
                        if r.event_name == semconv.EV_DETECTION]
                for i in dets:
                    set_attr(sl.log_records[i].attributes, "otelguard.test.marked", True)
                if dets:
                    del sl.log_records[dets[0]]
        batch.resource_logs.add().scope_logs.add().log_records.add().event_name = "x"
        raise RuntimeError("boom after marking")

    def shutdown(self) -> None:
        pass


def test_a_changes_only_stage_that_fails_gets_its_scopes_back() -> None:
    before = samples.logs(3, n_detections=4)
    other = samples.logs(5, resource={semconv.CONTAINER_ID: "d" * 64})
    before.resource_logs.extend(other.resource_logs)  # a group with no detection: not copied
    p = Pipeline([("p11_marker", DetectionMarker())])
    p.start()
    res = p.process(type(before)(resource_logs=before.resource_logs))
    assert res.failed_stages == ("p11_marker",)
    assert res.batch == before and res.records_out == count_records(before)


def test_noise_control_changes_nothing_but_detections() -> None:
    # the contract its changes_only restore rests on: with throttling (burst 1), the raw
    # records and every group and scope it found are as they were; detections marked or gone
    stage = NoiseControl(NoiseConfig(burst=1))
    assert stage.changes_only == frozenset({semconv.EV_DETECTION}) and stage.logs_only
    stage.start()
    batch = samples.logs(3, n_detections=4)
    raw = [r.SerializeToString() for r in batch.resource_logs[0].scope_logs[0].log_records
           if r.event_name != semconv.EV_DETECTION]
    out = stage.process(batch)
    assert out is batch and len(batch.resource_logs) == 1
    recs = batch.resource_logs[0].scope_logs[0].log_records
    assert [r.SerializeToString() for r in recs if r.event_name != semconv.EV_DETECTION] == raw
    assert 0 < sum(r.event_name == semconv.EV_DETECTION for r in recs) < 4  # throttled
