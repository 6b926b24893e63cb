"""noise_control: collapse within a window, first/last seen, token-bucket rate limit, bounds."""

from __future__ import annotations

from otelguard import semconv
from otelguard.processors.noise import Config, NoiseControl, workload_of
from otelguard.otlp.messages import attrs_dict, count_records, iter_log_records

from tests.support.metrics import sample
from . import samples


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _detections(batch: object) -> list[dict[str, object]]:
    return [attrs_dict(rec.attributes) for _, _, rec in iter_log_records(batch)  # type: ignore[arg-type]
            if rec.event_name == semconv.EV_DETECTION]


def _rate_limited() -> float:
    return sample("otelguard_dropped_total", stage="noise_control", reason="rate_limited")


def test_repeats_collapse_into_one_summary_with_count_and_first_last_seen() -> None:
    clock = Clock()
    stage = NoiseControl(Config(window_seconds=10), clock)
    out = stage.process(samples.logs(n_events=3, n_detections=4))
    first = _detections(out)
    assert count_records(out) == 4  # 3 raw events untouched + the first detection
    assert [d[semconv.DETECTION_COUNT] for d in first] == [1]
    assert first[0][semconv.TRIGGER_RECORD_UID] == "ev-0"
    clock.now += 5
    out = stage.process(samples.logs(n_events=1, n_detections=2, t0=samples.T0 + 10**9))
    assert _detections(out) == [] and count_records(out) == 1
    assert stage.drain(final=False) == []  # window still open
    clock.now += 6
    (summary_batch,) = stage.drain(final=False)
    (summary,) = _detections(summary_batch)
    assert summary[semconv.DETECTION_COUNT] == 5  # 3 + 2 repeats
    assert summary[semconv.DETECTION_FIRST_SEEN] == "2025-11-23T12:13:20.000001Z"
    assert summary[semconv.DETECTION_LAST_SEEN] == "2025-11-23T12:13:21.000001Z"
    assert summary[semconv.TRIGGER_RECORD_UID] == "ev-1"  # evidence of the last repeat
    res = attrs_dict(summary_batch.resource_logs[0].resource.attributes)
    assert res[semconv.K8S_DEPLOYMENT_NAME] == "cart"
    assert stage.open_windows == 0
    # the next one opens a fresh window and passes at once
    out = stage.process(samples.logs(n_events=0, n_detections=1))
    assert [d[semconv.DETECTION_COUNT] for d in _detections(out)] == [1]


def test_summary_rides_on_the_next_logs_batch() -> None:
    clock = Clock()
    stage = NoiseControl(Config(window_seconds=1), clock)
    stage.process(samples.logs(0, 3))
    clock.now += 2
    out = stage.process(samples.logs(n_events=2))
    counts = [d[semconv.DETECTION_COUNT] for d in _detections(out)]
    assert counts == [2] and count_records(out) == 3


def test_distinct_keys_do_not_collapse() -> None:
    stage = NoiseControl(Config(key_fields=(semconv.TRIGGER_RECORD_UID,)), Clock())
    out = stage.process(samples.logs(0, 5))
    assert len(_detections(out)) == 5
    other_rule = stage.process(samples.logs(0, 1, rule="Other rule"))
    assert len(_detections(other_rule)) == 1
    other_workload = stage.process(samples.logs(0, 1, resource={
        semconv.K8S_NAMESPACE_NAME: "shop", semconv.K8S_DEPLOYMENT_NAME: "web"}))
    assert len(_detections(other_workload)) == 1


def test_rate_limit_per_rule_and_workload_counts_drops() -> None:
    clock = Clock()
    stage = NoiseControl(Config(key_fields=(semconv.TRIGGER_RECORD_UID,), rate_per_second=2,
                                burst=3), clock)
    before = _rate_limited()
    out = stage.process(samples.logs(0, 10))
    assert len(_detections(out)) == 3
    assert _rate_limited() == before + 7
    assert stage.open_windows == 3  # rate-limited detections open no window
    # another workload has its own bucket
    assert len(_detections(stage.process(samples.logs(0, 2, resource={
        semconv.CONTAINER_ID: "e" * 64})))) == 2
    clock.now += 1.0  # 2 tokens back
    batch = samples.logs(0, 5, detection_attrs={})
    for i, (_, _, rec) in enumerate(iter_log_records(batch)):
        rec.attributes[-1].value.string_value = f"later-{i}"
    assert len(_detections(stage.process(batch))) == 2


def test_max_keys_closes_the_oldest_window_early() -> None:
    stage = NoiseControl(Config(key_fields=(semconv.TRIGGER_RECORD_UID,), max_keys=2,
                                burst=100), Clock())
    stage.process(samples.logs(0, 1))  # key ev-0
    stage.process(samples.logs(0, 1))  # repeat of ev-0
    out = stage.process(samples.logs(0, 3))  # ev-0 repeat, ev-1, ev-2 -> ev-0 evicted
    assert stage.open_windows == 2
    counts = sorted(d[semconv.DETECTION_COUNT] for d in _detections(out))
    assert counts == [1, 1, 2]  # ev-1, ev-2 first sightings + ev-0's summary of 2 repeats


def test_raw_events_and_spans_pass_untouched() -> None:
    stage = NoiseControl(Config(), Clock())
    batch = samples.logs(n_events=5)
    expected = batch.SerializeToString()
    assert stage.process(batch).SerializeToString() == expected
    spans = samples.traces(3)
    assert stage.process(spans) is spans and count_records(spans) == 3


def test_final_drain_releases_everything_and_counts_add_up() -> None:
    stage = NoiseControl(Config(window_seconds=3600), Clock())
    total = 0
    for _ in range(4):
        total += sum(int(d[semconv.DETECTION_COUNT]) for d in  # type: ignore[call-overload]
                     _detections(stage.process(samples.logs(1, 6))))
    for batch in stage.drain(final=True):
        total += sum(int(d[semconv.DETECTION_COUNT]) for d in _detections(batch))  # type: ignore[call-overload]
    assert total == 24


def test_workload_identity() -> None:
    assert workload_of({semconv.K8S_NAMESPACE_NAME: "a", semconv.K8S_STATEFULSET_NAME: "db"}) \
        == "a/db"
    assert workload_of({semconv.CONTAINER_ID: "x"}) == "container.id=x"
    assert workload_of({semconv.HOST_NAME: "n"}) == "host.name=n"
    assert workload_of({}) == ""
