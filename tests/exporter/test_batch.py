"""BatchExporter: batching by size and time, spans shipped, clean stop, config errors."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import pytest

from otelguard import semconv as sc
from otelguard.ebpf.events import Event
from otelguard.exporter.batch import BatchExporter
from otelguard.exporter.builder import OtlpBuilder
from otelguard.config import ConfigError, from_mapping
from otelguard.exporter.config import ExporterConfig
from otelguard.exporter.settings import NodeIdentity
from otelguard.otlp.messages import get_attr, iter_log_records, iter_spans
from otelguard.transport import Delivery, InMemoryTransport, RetryPolicy, Spool
from tests.exporter.scenario import QueueSource, shell_session
from tests.support.polling import wait_until

NODE = NodeIdentity("n", "h", "i")




def test_batches_by_size_and_time_and_ships_spans_on_stop() -> None:
    src = QueueSource()
    t = InMemoryTransport()
    cfg = ExporterConfig(max_batch=4, flush_interval_s=0.2, drain_timeout_s=0.05)
    exp = BatchExporter(src, Delivery(t), cfg, OtlpBuilder(NODE))
    exp.start()
    events = shell_session()
    for e in events[:4]:
        src.q.put(e)
    # a full batch goes out at once
    assert wait_until(lambda: t.log_record_count() == 4, 5.0, interval=0.02)
    for e in events[4:]:
        src.q.put(e)
    started = time.monotonic()
    # the partial one after the interval
    assert wait_until(lambda: t.log_record_count() == len(events), 5.0, interval=0.02)
    assert time.monotonic() - started < 2.0
    # curl exited and its connections closed: those spans are already out
    assert wait_until(lambda: t.span_count() == 3, 5.0, interval=0.02)
    exp.stop()
    assert t.shut_down
    names = sorted(span.name for req in t.traces for _, span in iter_spans(req))
    assert names == sorted(["connect 10.0.0.7:8443", "connect 10.0.0.7:443", "exec curl", "exec bash",
                            "exec sshd", "exec cron", "exec sh"])
    reasons = {span.name: get_attr(span.attributes, sc.SPAN_END_REASON)
               for req in t.traces for _, span in iter_spans(req)}
    assert reasons["exec bash"] == "shutdown" and reasons["exec curl"] == "exit"
    assert exp.stats()["events_in"] == len(events) and exp.stats()["open_spans"] == 0


def test_stop_drains_what_the_source_still_holds(tmp_path: Path) -> None:
    src = QueueSource()
    t = InMemoryTransport()
    exp = BatchExporter(src, Delivery(t, Spool(str(tmp_path), 10**7)),
                        ExporterConfig(max_batch=1000, flush_interval_s=5.0), OtlpBuilder(NODE))
    exp.start()
    for _ in range(20):
        for e in shell_session():
            src.q.put(e)
    exp.stop()
    assert t.log_record_count() == 20 * len(shell_session())
    seen = [rec.event_name for req in t.logs for _, _, rec in iter_log_records(req)]
    assert seen.count(sc.EV_PROCESS_EXEC) == 20 * 4


def test_endpoint_down_at_stop_leaves_records_in_the_spool(tmp_path: Path) -> None:
    src = QueueSource()
    t = InMemoryTransport()
    t.fail()
    policy = RetryPolicy(max_attempts=1, initial_backoff_s=0.01, down_max_s=0.05)
    spool = Spool(str(tmp_path), 10**7)
    exp = BatchExporter(src, Delivery(t, spool, policy), ExporterConfig(flush_interval_s=0.1),
                        OtlpBuilder(NODE))
    exp.start()
    for e in shell_session():
        src.q.put(e)
    exp.stop()
    assert spool.records == len(shell_session()) + 7  # all log records and the 7 spans


def test_config_from_mapping_collects_all_problems() -> None:
    assert from_mapping(ExporterConfig, {"max_batch": 64}, path="exporter").max_batch == 64
    with pytest.raises(ConfigError) as err:
        from_mapping(ExporterConfig, {"max_batch": "x", "flush_interval_s": -1, "bogus": 1},
                     path="exporter")
    problems = err.value.messages
    assert len(problems) == 3
    assert "exporter.flush_interval_s: must be > 0, got -1.0" in problems
    assert any(p.startswith("exporter.bogus: unknown key") for p in problems)
    assert any(p.startswith("exporter.max_batch: expected an integer, got str") for p in problems)
    with pytest.raises(ConfigError) as err:
        from_mapping(ExporterConfig, {"flush_interval_s": -1, "max_open_spans": 0},
                     path="exporter")
    assert err.value.messages == ["exporter.flush_interval_s: must be > 0, got -1.0",
                                  "exporter.max_open_spans: must be > 0, got 0"]
    with pytest.raises(ConfigError, match="exporter.flush_interval_s: must be within"):
        from_mapping(ExporterConfig, {"flush_interval_s": 60}, path="exporter")
    assert from_mapping(ExporterConfig, {"export_timeout_s": 2}, path="exporter").export_timeout_s == 2
    with pytest.raises(ConfigError, match="exporter.export_timeout_s: must be within 0.1-60 s"):
        from_mapping(ExporterConfig, {"export_timeout_s": 600}, path="exporter")


def test_a_failing_source_is_logged_and_the_thread_lives_on() -> None:
    src = QueueSource()
    calls = {"n": 0}

    def flaky(max_events: int, timeout_s: float) -> Sequence[Event]:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("ring buffer poll failed")
        return src(max_events, timeout_s)

    t = InMemoryTransport()
    exp = BatchExporter(flaky, Delivery(t), ExporterConfig(flush_interval_s=0.1, drain_timeout_s=0.05),
                        OtlpBuilder(NODE))
    exp.start()
    time.sleep(0.3)
    for e in shell_session():
        src.q.put(e)
    assert wait_until(lambda: t.log_record_count() == len(shell_session()), 5.0, interval=0.02)
    exp.stop()
    assert calls["n"] > 2


def test_many_open_spans_at_stop_go_out_in_bounded_requests() -> None:
    from otelguard.exporter.batch import SPANS_PER_REQUEST
    from tests.exporter.scenario import ev, proc_attrs

    src = QueueSource()
    t = InMemoryTransport()
    exp = BatchExporter(src, Delivery(t), ExporterConfig(max_batch=1000, flush_interval_s=0.2),
                        OtlpBuilder(NODE))
    n = SPANS_PER_REQUEST * 2 + 10
    for i in range(n):
        src.q.put(ev(sc.EV_PROCESS_EXEC, i, 10_000 + i, "execve", 0,
                     proc_attrs(10_000 + i, 1, "sh", "/bin/sh"), start=i, root=(10_000 + i, i)))
    exp.start()
    assert wait_until(lambda: t.log_record_count() == n, 5.0, interval=0.02)
    exp.stop()
    sizes = [sum(1 for _ in iter_spans(req)) for req in t.traces]
    assert sum(sizes) == n and max(sizes) <= SPANS_PER_REQUEST and len(sizes) == 3
