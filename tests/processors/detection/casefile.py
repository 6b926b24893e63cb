"""Hand-built OTLP records for rule tests, from compact YAML case specs (the format and the
builders live in otelguard.processors.detection.proof, which coverage.py uses too)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from otelguard.processors.detection import proof
from otelguard.processors.detection.proof import (  # noqa: F401  (re-exported for the tests)
    BASE_TIME, CONTAINER_RESOURCE, HOST_RESOURCE, batch_of, fill, merge, near_miss_of,
    resource_of,
)

CASES = Path(__file__).parent / "cases"
# Falco's incubating and sandbox rule files, shipped in the package beside the stable one
TESTDATA = Path(__file__).resolve().parents[3] / "src" / "otelguard" / "rules"


def load_cases(name: str) -> list[dict[str, Any]]:
    return proof.load_cases(CASES / name)
