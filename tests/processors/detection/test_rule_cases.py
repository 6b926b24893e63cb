"""Proof, not counts: every rule of each shipped ruleset (Falco's stable file with otelguard's
own rules, Falco's incubating and sandbox files) that loads fires on its hand-built record
(cases/*.yaml) and stays quiet on its near miss; a rule that cannot run on this sensor is
listed with its reason; a rule without a case fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from otelguard.processors.detection.engine import DEFAULT_RULE_FILES
from otelguard.processors.detection.proof import Proof, Prover

from .casefile import CASES, TESTDATA, load_cases, merge

STABLE = DEFAULT_RULE_FILES[0]
SUITES: dict[str, tuple[list[Path], list[Path]]] = {
    "stable_rules.yaml": (list(DEFAULT_RULE_FILES), list(DEFAULT_RULE_FILES)),
    "incubating_rules.yaml": ([STABLE, TESTDATA / "falco-incubating_rules.yaml"], []),
    "sandbox_rules.yaml": ([STABLE, TESTDATA / "falco-sandbox_rules.yaml"], []),
}
_PROVERS: dict[str, Prover] = {}


def _proofs(suite: str) -> list[Proof]:
    prover = _PROVERS.get(suite)
    if prover is None:
        paths, own = SUITES[suite]
        prover = _PROVERS[suite] = Prover(paths, own)
    assert prover.ruleset.ok, prover.ruleset.errors
    return prover.prove(load_cases(suite))


def test_every_case_file_has_a_suite() -> None:
    assert sorted(p.name for p in CASES.glob("*.yaml")) == sorted(SUITES)


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_every_rule_is_proven_or_listed_as_cannot_run(suite: str) -> None:
    proofs = _proofs(suite)
    failures = [f"{p.rule}: {p.problem}" for p in proofs if p.problem]
    assert not failures, "\n".join(failures)
    assert any(p.proven for p in proofs)


def test_stable_ruleset_counts() -> None:
    proofs = _proofs("stable_rules.yaml")
    assert len([p for p in proofs if p.proven]) == len(proofs)
    assert len([p for p in proofs if p.rule in {r.name for r in _PROVERS[
        "stable_rules.yaml"].ruleset.rules if r.ruleset == "falco_rules"}]) == 25


def test_a_rule_without_a_case_fails_its_proof() -> None:
    prover = Prover([STABLE])
    cases = [c for c in load_cases("stable_rules.yaml") if c["rule"] != "Run shell untrusted"]
    [missing] = [p for p in prover.prove(cases) if p.rule == "Run shell untrusted"]
    assert not missing.proven and "without a case" in missing.problem


def test_a_near_miss_that_fires_fails_its_proof() -> None:
    prover = Prover([STABLE])
    [case] = [c for c in load_cases("stable_rules.yaml") if c["rule"] == "Run shell untrusted"]
    bad = dict(case, near_miss={"attrs": {"process.pid": 1}})
    [p] = [p for p in prover.prove([bad]) if p.rule == "Run shell untrusted"]
    assert p.fires and not p.quiet and p.problem == "fires on its near miss"


def test_merge_deletes_with_null() -> None:
    assert merge({"a": {"b": 1, "c": 2}}, {"a": {"c": None}}) == {"a": {"b": 1}}
