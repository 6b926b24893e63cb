"""Prometheus config and alert rules: checked and unit-tested by promtool, loaded by a real Prometheus."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.stack import PROMETHEUS_DIR, PROMTOOL, Prometheus, get_json

pytestmark = pytest.mark.e2e

RULES = PROMETHEUS_DIR / "rules" / "otelguard.rules.yml"
RULE_TESTS = PROMETHEUS_DIR / "tests" / "otelguard.rules.test.yml"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(PROMTOOL), *args], capture_output=True, text=True, timeout=60,
                          cwd=PROMETHEUS_DIR)


def test_promtool_check_config() -> None:
    res = promtool("check", "config", "prometheus.yml")
    assert res.returncode == 0, res.stdout + res.stderr


def test_promtool_check_rules() -> None:
    res = promtool("check", "rules", str(RULES))
    assert res.returncode == 0, res.stdout + res.stderr


def test_promtool_rule_unit_tests() -> None:
    res = promtool("test", "rules", str(RULE_TESTS))
    assert res.returncode == 0, res.stdout + res.stderr


def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    """The unit tests above would catch a rule that never fires."""
    d = tmp_path
    (d / "rules").mkdir()
    (d / "tests").mkdir()
    (d / "rules" / "otelguard.rules.yml").write_text(
        RULES.read_text().replace('priority=~"EMERGENCY|ALERT|CRITICAL"', 'priority="NONE"'))
    (d / "tests" / "otelguard.rules.test.yml").write_text(RULE_TESTS.read_text())
    res = subprocess.run([str(PROMTOOL), "test", "rules", str(d / "tests" / "otelguard.rules.test.yml")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode != 0


def test_prometheus_loads_the_rules(prometheus: Prometheus) -> None:
    groups = get_json(f"{prometheus.url}/api/v1/rules")["data"]["groups"]
    names = {r["name"] for g in groups for r in g["rules"]}
    assert {"OtelguardCriticalDetection", "OtelguardRecordsDropped", "OtelguardPipelineLatencyHigh",
            "otelguard:detections:rate5m"} <= names
    assert all(r.get("health") in ("ok", "unknown") for g in groups for r in g["rules"])
