"""Data-driven: every stable Falco rule and every otelguard rule fires on its hand-built record
(cases/stable_rules.yaml) and stays quiet on the near miss."""

from __future__ import annotations

from typing import Any

import pytest

from otelguard.processors.detection.engine import DEFAULT_RULE_FILES, RuleEngine
from otelguard.processors.detection.loader import load_rules
from otelguard.processors.detection.ruleset import RuleSet

from .casefile import batch_of, load_cases, merge, near_miss_of

CASES = load_cases("stable_rules.yaml")
RULESET: RuleSet = load_rules(DEFAULT_RULE_FILES)


def _fired(case_before: list[dict[str, Any]], spec: dict[str, Any]) -> list[str]:
    engine = RuleEngine(RULESET)
    for b in case_before:
        engine.evaluate(batch_of(b))
    return [d.rule.name for d in engine.evaluate(batch_of(spec))]


def test_every_loaded_rule_has_a_case() -> None:
    assert RULESET.ok, RULESET.errors
    names = {r.name for r in RULESET.rules}
    assert len([r for r in RULESET.rules if r.ruleset == "falco_rules"]) == 25
    assert names == {c["rule"] for c in CASES}


@pytest.mark.parametrize("case", CASES, ids=[c["rule"] for c in CASES])
def test_rule_fires_on_match(case: dict[str, Any]) -> None:
    assert case["rule"] in _fired(case.get("before", []), case["match"])


@pytest.mark.parametrize("case", CASES, ids=[c["rule"] for c in CASES])
def test_rule_quiet_on_near_miss(case: dict[str, Any]) -> None:
    spec = near_miss_of(case) or case["match"]
    before = case.get("near_miss_before", case.get("before", []))
    assert "near_miss" in case or "near_miss_before" in case
    assert case["rule"] not in _fired(before, spec)


def test_merge_deletes_with_null() -> None:
    assert merge({"a": {"b": 1, "c": 2}}, {"a": {"c": None}}) == {"a": {"b": 1}}
