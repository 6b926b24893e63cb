"""Hand-built OTLP records for rule tests, from compact YAML case specs (the format and the
builders live in otelguard.processors.detection.proof, which coverage.py uses too)."""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

from otelguard.processors.detection import proof
from otelguard.processors.detection.engine import DEFAULT_RULE_FILES
from otelguard.processors.detection.proof import (  # noqa: F401  (re-exported for the tests)
    BASE_TIME, CONTAINER_RESOURCE, HOST_RESOURCE, batch_of, fill, merge, near_miss_of,
    resource_of,
)

CASES = Path(__file__).parent / "cases"
# Falco's incubating and sandbox rule files, shipped in the package beside the stable one
TESTDATA = Path(__file__).resolve().parents[3] / "src" / "otelguard" / "rules"


def load_cases(name: str) -> list[dict[str, Any]]:
    return proof.load_cases(CASES / name)


def specs(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every case's records in order: its ``before`` records, its match, its near miss."""
    out: list[dict[str, Any]] = []
    for case in cases:
        if "match" not in case:  # a rule listed as cannot run
            continue
        out.extend(case.get("before", []))
        out.append(case["match"])
        nm = near_miss_of(case)
        if nm is not None:
            out.append(nm)
    return out


def mutations(specs: list[dict[str, Any]], rng: random.Random, n: int) -> list[dict[str, Any]]:
    """Shuffled key order, dropped keys, values borrowed from another spec of the same event."""
    by_event: dict[str, list[dict[str, Any]]] = {}
    for s in specs:
        by_event.setdefault(s["event"], []).append(s)
    out = []
    for _ in range(n):
        spec = copy.deepcopy(rng.choice(specs))
        attrs: dict[str, Any] = dict(spec.get("attrs", {}))
        donor = rng.choice(by_event[spec["event"]]).get("attrs", {})
        for key in list(attrs):
            r = rng.random()
            if r < 0.15:
                del attrs[key]
            elif r < 0.35 and key in donor:
                attrs[key] = donor[key]
        for key in donor:
            if key not in attrs and rng.random() < 0.3:
                attrs[key] = donor[key]
        items = list(attrs.items())
        rng.shuffle(items)
        spec["attrs"] = dict(items)
        out.append(spec)
    return out


# rule files and their cases: the stable set (the default), and with Falco's incubating rules
SUITES = {
    "stable": (DEFAULT_RULE_FILES, load_cases("stable_rules.yaml")),
    "stable+incubating": ((TESTDATA / "falco_rules.yaml",
                           TESTDATA / "falco-incubating_rules.yaml",
                           TESTDATA / "otelguard_rules.yaml"),
                          load_cases("stable_rules.yaml") + load_cases("incubating_rules.yaml")),
}
