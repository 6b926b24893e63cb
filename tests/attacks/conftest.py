"""Fixtures for the attack tests: the session Sensor (tests/support/sensor.py; BCC compiles once) and one
detection stage built like the product's (rules compile once)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from otelguard.processors.detection.processor import FalcoRulesProcessor
from tests.attacks.harness import detection_stage, same_fs_dir, PYTHON
from tests.support.sensor import sensor  # noqa: F401  (re-exported session fixture)


@pytest.fixture(scope="session")
def stage() -> FalcoRulesProcessor:
    return detection_stage()


@pytest.fixture
def bindir() -> Iterator[Path]:
    """A scratch directory on the filesystem of the Python binary (for hard-linked names)."""
    yield from same_fs_dir(PYTHON)
