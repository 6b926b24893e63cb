"""Falco's incubating rules on the real kernel, for the values formatted as libs formats them:
a chmod that sets the setuid bit fires "Set Setuid or Setgid bit" (evt.arg.mode carries the
S_I* names), one that does not stays quiet."""

from __future__ import annotations

from pathlib import Path

import pytest

from otelguard import semconv as S
from otelguard.ebpf.sensor import Sensor
from otelguard.processors.detection.config import Config
from otelguard.processors.detection.processor import FalcoRulesProcessor, create
from tests.attacks.harness import python_attack

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(90)]

INCUBATING = (Path(__file__).resolve().parents[2] / "src" / "otelguard" / "rules"
              / "falco-incubating_rules.yaml")
RULE = "Set Setuid or Setgid bit"


@pytest.fixture(scope="module")
def incubating() -> FalcoRulesProcessor:
    """The stage with Falco's incubating rules loaded after the packaged default."""
    return create(Config(local_rules=(str(INCUBATING),)))


def _chmod(sensor: Sensor, stage: FalcoRulesProcessor, path: Path, mode: int) -> list[str]:
    code = (f"import os; open({str(path)!r}, 'w').close(); os.chmod({str(path)!r}, {mode:#o})")
    attack = python_attack(sensor, stage, code)
    chmods = [a for a in attack.records(S.EV_FILE_CHMOD) if a.get(S.FILE_PATH) == str(path)]
    assert chmods, "the sensor reported no chmod of the file"
    return [d.body for d in attack.fired(RULE)]


def test_setuid_bit_fires_with_the_mode_names(sensor: Sensor, incubating: FalcoRulesProcessor,
                                              tmp_path: Path) -> None:
    [body] = _chmod(sensor, incubating, tmp_path / "rootshell", 0o4755)
    assert "mode=S_IXOTH|S_IROTH|S_IXGRP|S_IRGRP|S_IXUSR|S_IWUSR|S_IRUSR|S_ISUID" in body


def test_plain_chmod_does_not_fire(sensor: Sensor, incubating: FalcoRulesProcessor,
                                   tmp_path: Path) -> None:
    assert _chmod(sensor, incubating, tmp_path / "tool", 0o755) == []
