"""The ``sensor:`` config section."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from otelguard.config import ConfigError, from_mapping
from otelguard.ebpf.settings import SensorConfig, load_sensor_config


def _sensor(data: Any) -> SensorConfig:
    return from_mapping(SensorConfig, data, path="sensor")


def test_defaults_and_valid_values() -> None:
    assert _sensor(None) == SensorConfig()
    cfg = _sensor({
        "probes": ["process", "file"], "queue_size": 10, "node_name": "n1", "long_lived_s": 5,
        "cgroup_scope": ["/kubepods.slice"],
        "probe": {"ringbuf_pages": 64, "read_path_prefixes": ["/etc/"], "argv_max": 8,
                  "arg_len": 64, "dns_ports": [53, 5353]},
    })
    assert cfg.probes == ("process", "file") and cfg.queue_size == 10 and cfg.node_name == "n1"
    assert cfg.long_lived_s == 5.0 and cfg.cgroup_scope == ("/kubepods.slice",)
    with pytest.raises(ConfigError, match=r"sensor.cgroup_scope\[0\]: expected an absolute cgroup "
                       "path, got 'kubepods'"):
        _sensor({"cgroup_scope": ["kubepods"]})
    assert cfg.probe.ringbuf_pages == 64 and cfg.probe.read_path_prefixes == ("/etc/",)
    assert cfg.probe.dns_ports == (53, 5353)
    # the read filter: unset means "what the rules need" (built-in list without rules)
    assert SensorConfig().probe.read_path_prefixes is None
    assert "/etc/" in SensorConfig().probe.read_prefixes
    exact = _sensor({"probe": {"read_paths": ["/etc/app/token"], "dedup_window_ms": 0}})
    assert exact.probe.read_paths == ("/etc/app/token",) and exact.probe.dedup_window_ms == 0
    for bad, where in (({"read_paths": ["token"]}, r"read_paths\[0\]"),
                       ({"dedup_window_ms": -1}, "dedup_window_ms"),
                       ({"dedup_entries": 1}, "dedup_entries")):
        with pytest.raises(ConfigError, match=f"sensor.probe.{where}"):
            _sensor({"probe": bad})


def test_all_problems_reported_with_dotted_paths() -> None:
    with pytest.raises(ConfigError) as info:
        _sensor({
            "probes": ["process", "kprobe"], "queue_sise": 1, "queue_size": "big",
            "probe": {"ringbuf_pages": 3, "self_tgid": 1, "read_path_prefixes": ["etc", 5],
                      "argv_max": 0, "bogus": True},
        })
    problems = [str(i) for i in info.value.issues]
    assert "sensor.probes[1]: expected one of 'process', 'file', 'network', 'privilege', " \
           "'evasion', got str 'kprobe'" in problems
    assert any(p.startswith("sensor.queue_sise: unknown key (known: budget, cgroup_scope,") for p in problems)
    assert "sensor.queue_size: expected an integer, got str 'big'" in problems
    # self_tgid is set by the sensor, never by the file
    assert any(p.startswith("sensor.probe.self_tgid: unknown key (known: arg_len, argv_max, "
                            "dedup_entries, dedup_window_ms, dns_ports, env_len, env_max, "
                            "env_names, read_path_prefixes, read_paths, ringbuf_pages)")
               for p in problems)
    assert any(p.startswith("sensor.probe.bogus: unknown key") for p in problems)
    assert "sensor.probe.read_path_prefixes[1]: expected a string, got int 5" in problems
    assert "sensor.probe.argv_max: must be 1..64, got 0" in problems
    assert "sensor.probe.ringbuf_pages: must be a power of two >= 1, got 3" in problems
    assert len(problems) == 8, problems


def test_load_from_yaml_file(tmp_path: Path) -> None:
    f = tmp_path / "otelguard.yaml"
    f.write_text("exporter: {}\nsensor:\n  queue_size: 7\n")
    assert load_sensor_config(str(f)).queue_size == 7
    f.write_text("sensor:\n  queue_size: true\n")
    with pytest.raises(ConfigError,
                       match=r"otelguard.yaml:2: sensor.queue_size: expected an integer, got bool"):
        load_sensor_config(str(f))
    f.write_text("sensor: [1\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_sensor_config(str(f))
    assert load_sensor_config(None) == SensorConfig()


def test_unknown_key_deep_in_the_file_has_line_and_path(tmp_path: Path) -> None:
    f = tmp_path / "otelguard.yaml"
    f.write_text("sensor:\n  probe:\n    argv_max: 8\n    arg_lenn: 64\n  queue_size: 0\n")
    with pytest.raises(ConfigError) as info:
        load_sensor_config(str(f))
    assert [(i.path, i.line, i.file) for i in info.value.issues] == [
        ("sensor.probe.arg_lenn", 4, str(f)), ("sensor.queue_size", 5, str(f))]
