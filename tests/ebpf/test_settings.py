"""The ``sensor:`` config section."""

from __future__ import annotations

from pathlib import Path

import pytest

from otelguard.ebpf.errors import ConfigError
from otelguard.ebpf.settings import SensorConfig, load_sensor_config, sensor_config_from_mapping


def test_defaults_and_valid_values() -> None:
    assert sensor_config_from_mapping(None) == SensorConfig()
    cfg = sensor_config_from_mapping({
        "probes": ["process", "file"], "queue_size": 10, "node_name": "n1", "long_lived_s": 5,
        "cgroup_scope": ["/kubepods.slice"],
        "probe": {"ringbuf_pages": 64, "read_path_prefixes": ["/etc/"], "argv_max": 8,
                  "arg_len": 64, "dns_ports": [53, 5353]},
    })
    assert cfg.probes == ("process", "file") and cfg.queue_size == 10 and cfg.node_name == "n1"
    assert cfg.long_lived_s == 5.0 and cfg.cgroup_scope == ("/kubepods.slice",)
    with pytest.raises(ConfigError, match="sensor.cgroup_scope: expected a list of absolute"):
        sensor_config_from_mapping({"cgroup_scope": ["kubepods"]})
    assert cfg.probe.ringbuf_pages == 64 and cfg.probe.read_path_prefixes == ("/etc/",)
    assert cfg.probe.dns_ports == (53, 5353)


def test_all_problems_reported_with_dotted_paths() -> None:
    with pytest.raises(ConfigError) as info:
        sensor_config_from_mapping({
            "probes": ["process", "kprobe"], "queue_sise": 1, "queue_size": "big",
            "probe": {"ringbuf_pages": 3, "self_tgid": 1, "read_path_prefixes": ["etc", 5],
                      "argv_max": 0, "bogus": True},
        })
    problems = info.value.problems
    assert "sensor.probes[1]: unknown probe 'kprobe' (one of ('process', 'file', 'network', " \
           "'privilege', 'evasion'))" in problems
    assert "sensor.queue_sise: unknown key" in problems
    assert "sensor.queue_size: expected int, got str" in problems
    assert "sensor.probe.self_tgid: unknown key" in problems
    assert "sensor.probe.bogus: unknown key" in problems
    assert "sensor.probe.read_path_prefixes[1]: expected str, got int" in problems
    assert "sensor.probe.argv_max: must be 1..64, got 0" in problems
    assert "sensor.probe.ringbuf_pages: must be a power of two >= 1, got 3" in problems
    assert len(problems) == 8


def test_load_from_yaml_file(tmp_path: Path) -> None:
    f = tmp_path / "otelguard.yaml"
    f.write_text("exporter: {}\nsensor:\n  queue_size: 7\n")
    assert load_sensor_config(str(f)).queue_size == 7
    f.write_text("sensor:\n  queue_size: true\n")
    with pytest.raises(ConfigError, match=r"otelguard.yaml: sensor.queue_size: expected int"):
        load_sensor_config(str(f))
    f.write_text("sensor: [1\n")
    with pytest.raises(ConfigError):
        load_sensor_config(str(f))
    assert load_sensor_config(None) == SensorConfig()
