"""noise_control: first sightings always pass, repeats are throttled per distinct key with
start/stop records whose counts reconcile exactly, CRITICAL is never throttled, the key space is
bounded and its exhaustion is a detection. Deterministic: the clock is injected."""

from __future__ import annotations

from typing import Optional

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otelguard import semconv
from otelguard.otlp.messages import PyValue, attrs_dict, count_records, iter_log_records
from otelguard.processors.noise import KEY_SPACE_EXHAUSTED, Config, NoiseControl, workload_of
from otelguard.processors.stage import Batch

from tests.support.metrics import sample

from . import samples

SHM_RULE = "Execution from /dev/shm"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _detections(batch: Batch) -> list[dict[str, PyValue]]:
    assert isinstance(batch, ExportLogsServiceRequest)
    return [attrs_dict(rec.attributes) for _, _, rec in iter_log_records(batch)
            if rec.event_name == semconv.EV_DETECTION]


def _drained(stage: NoiseControl, final: bool = False) -> list[dict[str, PyValue]]:
    return [d for batch in stage.drain(final) for d in _detections(batch)]


def _count(d: dict[str, PyValue]) -> int:
    value = d[semconv.DETECTION_COUNT]
    assert isinstance(value, int)
    return value


def _shm(n: int, exe: str = "/dev/shm/decoy", severity: int = 13,
         cmdline: Optional[str] = None) -> ExportLogsServiceRequest:
    attrs: dict[str, PyValue] = {semconv.PROCESS_EXECUTABLE_PATH: exe}
    if cmdline is not None:
        attrs[semconv.PROCESS_COMMAND_LINE] = cmdline
    batch = samples.logs(0, n, rule=SHM_RULE, detection_attrs=attrs)
    for _, _, rec in iter_log_records(batch):
        rec.severity_number = severity  # type: ignore[assignment]
    return batch


def _throttle(records: list[dict[str, PyValue]], state: str) -> list[dict[str, PyValue]]:
    return [d for d in records if d.get(semconv.NOISE_THROTTLE) == state]


def test_first_sightings_pass_then_repeats_are_throttled_with_start_and_stop() -> None:
    clock = Clock()
    stage = NoiseControl(Config(window_seconds=10, burst=2), clock)
    out = stage.process(samples.logs(n_events=3, n_detections=5))
    passed = _detections(out)
    assert count_records(out) == 5  # 3 raw events untouched + 2 detections (the burst)
    assert [_count(d) for d in passed] == [1, 1]
    assert [d[semconv.TRIGGER_RECORD_UID] for d in passed] == ["ev-0", "ev-1"]
    (start,) = _drained(stage)  # the throttle-start leaves with the next flush, not the request
    assert start[semconv.NOISE_THROTTLE] == semconv.NOISE_THROTTLE_START
    assert _count(start) == 0 and start[semconv.TRIGGER_RECORD_UID] == "ev-2"
    assert start[semconv.NOISE_KEY] == (
        "Terminal shell in container | shop/cart | "
        "process.executable.path=/bin/sh, process.command_line=sh -i")
    clock.now += 5
    later = stage.process(samples.logs(n_events=1, n_detections=2, t0=samples.T0 + 10**9))
    assert _detections(later) == [] and count_records(later) == 1
    assert _drained(stage) == []  # window still open
    clock.now += 6
    (stop,) = _drained(stage)
    assert stop[semconv.NOISE_THROTTLE] == semconv.NOISE_THROTTLE_STOP
    assert _count(stop) == 5  # 3 + 2 suppressed, exactly
    assert stop[semconv.NOISE_KEY] == start[semconv.NOISE_KEY]
    assert stop[semconv.DETECTION_FIRST_SEEN] == "2025-11-23T12:13:20.000001Z"  # ev-2
    assert stop[semconv.DETECTION_LAST_SEEN] == "2025-11-23T12:13:21.000001Z"
    assert stop[semconv.TRIGGER_RECORD_UID] == "ev-1"  # evidence of the last suppressed one
    assert stage.open_windows == 0 and stage.held_detections == 0
    # the window closed: the next sighting is first-seen again and passes at once
    assert [_count(d) for d in _detections(stage.process(samples.logs(0, 1)))] == [1]


def test_flood_of_decoys_does_not_hide_the_real_detection_and_counts_reconcile() -> None:
    """100x the limit of one rule+workload's decoys, the real one in the middle of the flood."""
    limit = 20
    clock = Clock()
    stage = NoiseControl(Config(window_seconds=60, burst=limit), clock)
    decoys_in = limit * 100
    out: list[dict[str, PyValue]] = []
    for i in range(decoys_in // 100):
        out += _detections(stage.process(_shm(100)))
        if i == decoys_in // 200:
            out += _detections(stage.process(_shm(1, exe="/dev/shm/payload")))
        clock.now += 0.5
        out += _drained(stage)
    out += _drained(stage, final=True)
    real = [d for d in out if d[semconv.PROCESS_EXECUTABLE_PATH] == "/dev/shm/payload"]
    assert [(_count(d), d.get(semconv.NOISE_THROTTLE)) for d in real] == [(1, None)]
    decoys = [d for d in out if d[semconv.PROCESS_EXECUTABLE_PATH] == "/dev/shm/decoy"]
    passed = [d for d in decoys if semconv.NOISE_THROTTLE not in d]
    (start,) = _throttle(decoys, semconv.NOISE_THROTTLE_START)
    (stop,) = _throttle(decoys, semconv.NOISE_THROTTLE_STOP)
    assert len(passed) == limit and all(_count(d) == 1 for d in passed)
    assert _count(start) == 0 and _count(stop) == decoys_in - limit
    assert len(passed) + _count(stop) == decoys_in  # in = out + suppressed, exactly
    assert sum(_count(d) for d in decoys) == decoys_in


def test_decoys_with_varying_values_are_all_first_seen_and_all_arrive() -> None:
    """The measured attack: decoys that differ from each other. Each is first-seen: none is
    dropped, and they cannot use up anything the real detection needs."""
    stage = NoiseControl(Config(burst=1, max_keys=100_000), Clock())
    batch = _shm(0)
    for i in range(2000):
        batch.MergeFrom(_shm(1, cmdline=f"decoy {i}"))
    batch.MergeFrom(_shm(1, exe="/dev/shm/payload"))
    out = _detections(stage.process(batch))
    assert len(out) == 2001 and out[-1][semconv.PROCESS_EXECUTABLE_PATH] == "/dev/shm/payload"
    assert _drained(stage, final=True) == []  # nothing was throttled


def test_critical_flood_is_never_throttled() -> None:
    stage = NoiseControl(Config(burst=2, max_keys=5), Clock())
    out = _detections(stage.process(_shm(200, severity=21)))
    assert len(out) == 200 and all(_count(d) == 1 for d in out)
    # by priority word as well, when the severity number says less
    batch = _shm(50, severity=0)
    for _, _, rec in iter_log_records(batch):
        rec.attributes.add(key=semconv.SECURITY_RULE_PRIORITY).value.string_value = "ALERT"
    assert len(_detections(stage.process(batch))) == 50
    assert stage.open_windows == 0  # CRITICAL detections hold no key
    assert _drained(stage, final=True) == []


def test_key_space_exhaustion_is_a_detection_and_loses_no_count() -> None:
    clock = Clock()
    stage = NoiseControl(Config(window_seconds=60, burst=1, max_keys=3), clock)
    def counted() -> float:
        return sample("otelguard_detections_total", rule=KEY_SPACE_EXHAUSTED, priority="ERROR",
                      tactic="", k8s_namespace_name="shop", workload="")

    before = counted()
    assert len(_detections(stage.process(_shm(4, exe="/bin/a")))) == 1  # 3 suppressed
    for exe in ("/bin/b", "/bin/c", "/bin/d", "/bin/e"):  # /bin/d then /bin/e evict a, b
        assert len(_detections(stage.process(_shm(1, exe=exe)))) == 1
    assert stage.open_windows == 3 and stage.keys_evicted == 2
    released = _drained(stage)
    (exhausted,) = [d for d in released if d[semconv.SECURITY_RULE_NAME] == KEY_SPACE_EXHAUSTED]
    assert exhausted[semconv.SECURITY_RULE_PRIORITY] == "ERROR" and _count(exhausted) == 1
    assert "/bin/d" in str(exhausted[semconv.NOISE_KEY])
    assert counted() == before + 1  # once per window
    (stop,) = _throttle(released, semconv.NOISE_THROTTLE_STOP)  # /bin/a closed early, counted
    assert stop[semconv.PROCESS_EXECUTABLE_PATH] == "/bin/a" and _count(stop) == 3
    # an evicted key is first-seen again: its next sighting passes
    assert len(_detections(stage.process(_shm(1, exe="/bin/a")))) == 1
    clock.now += 61  # a new window: the next exhaustion is reported again
    stage.process(_shm(1, exe="/bin/f"))
    stage.process(_shm(1, exe="/bin/g"))
    stage.process(_shm(1, exe="/bin/h"))
    stage.process(_shm(1, exe="/bin/i"))
    assert [d[semconv.SECURITY_RULE_NAME] for d in _drained(stage)].count(KEY_SPACE_EXHAUSTED) \
        == 1
    assert counted() == before + 2


def test_a_retried_request_passes_its_first_seen_detection_again() -> None:
    """The forward of a request failed and the caller sends it again: the detection that passed
    the first time is not turned into a suppressed repeat."""
    stage = NoiseControl(Config(burst=1), Clock())
    batch = samples.logs(0, 1, detection_attrs={semconv.LOG_RECORD_UID: "det-1"})
    retry = ExportLogsServiceRequest()
    retry.CopyFrom(batch)
    assert len(_detections(stage.process(batch))) == 1
    assert len(_detections(stage.process(retry))) == 1
    other = samples.logs(0, 1, detection_attrs={semconv.LOG_RECORD_UID: "det-2"})
    assert _detections(stage.process(other)) == []  # a real repeat is throttled
    assert stage.held_detections == 1


def test_shutdown_without_drain_counts_what_was_held() -> None:
    stage = NoiseControl(Config(burst=1), Clock())
    def lost() -> float:
        return sample("otelguard_dropped_total", stage="noise_control", reason="shutdown_unflushed")

    before = lost()
    stage.process(samples.logs(0, 4))  # 1 passes, 3 suppressed, 1 start record released
    assert stage.held_detections == 3
    stage.shutdown()
    assert lost() == before + 4  # 3 + the start record
    assert stage.held_detections == 0 and stage.open_windows == 0


def test_distinct_keys_do_not_share_a_throttle() -> None:
    stage = NoiseControl(Config(key_fields=(semconv.TRIGGER_RECORD_UID,), burst=1), Clock())
    assert len(_detections(stage.process(samples.logs(0, 5)))) == 5
    assert len(_detections(stage.process(samples.logs(0, 1, rule="Other rule")))) == 1
    assert len(_detections(stage.process(samples.logs(0, 1, resource={
        semconv.K8S_NAMESPACE_NAME: "shop", semconv.K8S_DEPLOYMENT_NAME: "web"})))) == 1
    assert _detections(stage.process(samples.logs(0, 1))) == []  # ev-0 again: a repeat


def test_throttle_records_pass_a_second_noise_stage_untouched() -> None:
    first = NoiseControl(Config(burst=1), Clock())
    first.process(samples.logs(0, 3))
    (released,) = first.drain(final=True)
    second = NoiseControl(Config(burst=1), Clock())
    assert [d[semconv.NOISE_THROTTLE] for d in _detections(second.process(released))] == [
        semconv.NOISE_THROTTLE_START, semconv.NOISE_THROTTLE_STOP]


def test_raw_events_and_spans_pass_untouched() -> None:
    stage = NoiseControl(Config(), Clock())
    batch = samples.logs(n_events=5)
    expected = batch.SerializeToString()
    assert stage.process(batch).SerializeToString() == expected
    spans = samples.traces(3)
    assert stage.process(spans) is spans and count_records(spans) == 3


def test_workload_identity() -> None:
    assert workload_of({semconv.K8S_NAMESPACE_NAME: "a", semconv.K8S_STATEFULSET_NAME: "db"}) \
        == "a/db"
    assert workload_of({semconv.CONTAINER_ID: "x"}) == "container.id=x"
    assert workload_of({semconv.HOST_NAME: "n"}) == "host.name=n"
    assert workload_of({}) == ""
