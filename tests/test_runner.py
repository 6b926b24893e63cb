"""``otelguard run``'s PipelineSink releases what stages hold on its own timer (driven by the
export thread's sends and idle replays), not only at shutdown. Clocks injected: no sleeps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from otelguard import semconv
from otelguard.otlp.messages import attrs_dict, iter_log_records
from otelguard.processors.noise import Config, NoiseControl
from otelguard.processors.pipeline import Pipeline
from otelguard.runner import HELD_FLUSH_INTERVAL_S, PipelineSink
from otelguard.transport.delivery import Delivery
from otelguard.transport.memory import InMemoryTransport

from tests.processors import samples


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _throttle_states(sink: InMemoryTransport) -> list[object]:
    return [attrs_dict(rec.attributes).get(semconv.NOISE_THROTTLE) for req in sink.logs
            for _, _, rec in iter_log_records(req) if rec.event_name == semconv.EV_DETECTION]


def test_held_records_leave_on_the_timer_while_idle_and_at_shutdown() -> None:
    clock = Clock()
    pipeline = Pipeline([("noise_control", NoiseControl(Config(window_seconds=5, burst=1),
                                                        clock))])
    pipeline.start()
    out = InMemoryTransport()
    sink = PipelineSink(pipeline, [Delivery(out, None, stage="output")], clock)
    batch = samples.logs(0, 4)
    assert sink.send_logs(batch.SerializeToString(), 4)
    assert _throttle_states(out) == [None]  # 1 passed; the start record is held until due
    sink.replay()  # idle, not due yet
    assert _throttle_states(out) == [None]
    clock.now += HELD_FLUSH_INTERVAL_S
    sink.replay()  # idle and due: the start record leaves
    assert _throttle_states(out) == [None, semconv.NOISE_THROTTLE_START]
    sink.send_logs(samples.logs(0, 2).SerializeToString(), 2)  # 2 more suppressed
    sink.shutdown()  # the open window's stop record
    assert _throttle_states(out) == [None, semconv.NOISE_THROTTLE_START,
                                     semconv.NOISE_THROTTLE_STOP]
    stop = [attrs_dict(rec.attributes) for req in out.logs for _, _, rec in iter_log_records(req)]
    assert stop[-1][semconv.DETECTION_COUNT] == 5


def test_exit_summary_names_the_cgroups_over_budget() -> None:
    from otelguard.runner import summary

    cid = "ab" * 32
    text = summary({"budget_offenders": [
        {"workload": cid, "cgroup_id": 7, "dropped": 1234, "high_value": 5},
        {"workload": "/system.slice/cron.service", "cgroup_id": 8, "dropped": 10,
         "high_value": 0}]}, [])
    lines = text.splitlines()
    at = lines.index("  over budget, by container (top):")
    assert lines[at + 1].split() == [cid, "1234", "(high-value", "5)"]
    assert lines[at + 2].split()[0] == "/system.slice/cron.service"
    assert "over budget" not in summary({"budget_offenders": []}, [])


def test_exit_summary_counts_the_opens_deduplicated_in_the_kernel() -> None:
    from otelguard.runner import summary

    assert "  identical opens counted in the kernel, not re-sent: 999" in \
        summary({"file_repeats": (999, 0)}, []).splitlines()
    assert "(3 of them overwritten before reported)" in summary({"file_repeats": (9, 3)}, [])
    assert "identical opens" not in summary({"file_repeats": (0, 0)}, [])


def test_default_config_is_read_when_present(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from otelguard import runner

    default = tmp_path / "otelguard.yaml"
    monkeypatch.setattr(runner, "DEFAULT_CONFIG", str(default))
    assert runner.default_config(None) is None  # absent: the built-in defaults
    default.write_text("reload: {watch_interval_seconds: 0}\n")
    assert runner.default_config(None) == str(default)
    assert runner.default_config("/elsewhere.yaml") == "/elsewhere.yaml"  # --config wins
    assert runner.load_run_config(runner.default_config(None)).reload.watch_interval_seconds == 0


def test_run_without_rules_keeps_the_built_in_read_prefixes() -> None:
    """A pipeline with no falco_rules stage (and no sensor.read_rules) knows no rules to derive
    the kernel read filter from: the built-in prefixes stay (an empty filter would hide every
    read, e.g. of /etc/shadow, from an enrichment-only run); a profiles stage adds what it
    learns; with a rules stage the filter is the rules' exact one (no /etc/ prefix)."""
    from otelguard.ebpf.probe import DEFAULT_READ_PREFIXES
    from otelguard.ebpf.settings import SensorConfig
    from otelguard.processors.config import build_pipeline_config
    from otelguard.processors.profiles.observe import SENSITIVE_READS
    from otelguard.runner import build_pipeline, with_rules_read_filter

    def specs(kind: str) -> Any:
        return build_pipeline_config({"processors": [{"type": kind}]}).processors

    noise_only = build_pipeline(specs("noise_control"), None, incidents=False)
    probe = with_rules_read_filter(SensorConfig(), noise_only).probe
    assert probe.read_prefixes == DEFAULT_READ_PREFIXES
    assert "/etc/" in probe.read_prefixes
    with_profiles = build_pipeline(specs("profiles"), None, incidents=False)
    probe = with_rules_read_filter(SensorConfig(), with_profiles).probe
    assert set(probe.read_prefixes) == set(DEFAULT_READ_PREFIXES) | set(SENSITIVE_READS)
    ruled = with_rules_read_filter(SensorConfig(), build_pipeline(None, None)).probe
    assert "/etc/" not in ruled.read_prefixes and "/etc/shadow" in ruled.read_paths


def test_run_pipeline_and_local_outputs_do_not_import_grpc(tmp_path: Path) -> None:
    # a fresh interpreter: `otelguard run`'s default pipeline and its local outputs need no grpc
    # (its ~70 ms of imports belong to the OTLP/gRPC output and the processor service only)
    import os
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from otelguard.runner import build_pipeline\n"
        "from otelguard.transport.spec import parse_spec\n"
        "from otelguard.processors.errors import invalid_argument\n"
        "build_pipeline(None, None)\n"
        f"parse_spec('jsonl:' + {str(tmp_path / 'out.jsonl')!r})\n"
        "parse_spec('console')\n"
        "assert 'grpc' not in sys.modules, 'grpc imported'\n"
        "error = invalid_argument('bad', 'refused')\n"  # a status made: grpc comes in then
        "assert 'grpc' in sys.modules and not error.retryable, error.code\n"
        "print('ok')\n")
    src = Path(__file__).resolve().parents[1] / "src"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env=dict(os.environ, PYTHONPATH=str(src)))
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
