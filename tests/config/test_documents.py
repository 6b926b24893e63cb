"""Each config file kind through the one loader: a deep unknown key and two errors in one file
are reported with file:line and dotted path."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from otelguard.agent import load_agent_config
from otelguard.config import ConfigError
from otelguard.processors.config import load_pipeline_config
from otelguard.runner import load_run_config


def _issues(load: Callable[[str], object], path: Path) -> list[tuple[str, int | None]]:
    with pytest.raises(ConfigError) as info:
        load(str(path))
    assert all(i.file == str(path) for i in info.value.issues)
    return [(i.path, i.line) for i in info.value.issues]


def test_agent_file(tmp_path: Path) -> None:
    f = tmp_path / "agent.yaml"
    f.write_text("sensor:\n  probe:\n    dns_portz: [53]\nexporter:\n  max_batch: 9000\n")
    assert _issues(load_agent_config, f) == [("sensor.probe.dns_portz", 3),
                                              ("exporter.max_batch", 5)]
    f.write_text("sensor: {queue_size: 5}\nexporter: {max_batch: 64}\n")
    cfg = load_agent_config(str(f))
    assert cfg.sensor.queue_size == 5 and cfg.exporter.max_batch == 64
    f.write_text("sensor: {}\nprocessors: []\n")  # the agent runs no stages
    assert _issues(load_agent_config, f) == [("processors", 2)]


def test_run_file(tmp_path: Path) -> None:
    f = tmp_path / "run.yaml"
    f.write_text("sensor:\n  cgroup_scope: [kubepods]\nprocessors:\n  - type: k8s_attributes\n"
                 "    config:\n      hold_seconds: 1\n      pod_hold_seconds: 2\n")
    assert _issues(load_run_config, f) == [("sensor.cgroup_scope[0]", 2),
                                           ("processors[0].config.pod_hold_seconds", 7)]
    assert load_run_config(None).processors is None  # the default pipeline
    f.write_text("processors:\n  - type: noise_control\n    config: {burst: 3}\n")
    (spec,) = load_run_config(str(f)).processors or ()
    assert spec.name == "noise_control" and spec.config.burst == 3


def test_pipeline_file(tmp_path: Path) -> None:
    f = tmp_path / "pipeline.yaml"
    f.write_text("service:\n  listen: 0.0.0.0:4317\nprocessors:\n  - type: falco_rules\n"
                 "    config:\n      state:\n        max_procs: 5\n"
                 "  - type: noise_control\n    config: {window_seconds: 0}\n")
    assert _issues(load_pipeline_config, f) == [
        ("processors[0].config.state.max_procs", 7), ("processors[1].config.window_seconds", 9)]
