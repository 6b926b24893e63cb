"""A policy tree's profiles/ and ProfileExceptions run by the profiles stage (``policy_dir``,
processors/profiles/tree.py; docs/policy.md#profile-exceptions): the tree's approved profile is
enforced and never written, deviations carry the tree's revision, an owned exception silences
exactly its deviations until its last day and then says it expired, a broken tree keeps the
previous one running, and ``--policy`` adds the stage."""

from __future__ import annotations

import logging
import shutil
from datetime import date
from pathlib import Path

import pytest

from otelguard import semconv as S
from otelguard.cli import main as otelguard_main
from otelguard.config import ConfigError
from otelguard.processors.profiles import Config, ProfilesStage
from otelguard.processors.profiles.cli import approve
from otelguard.processors.profiles.document import file_name
from otelguard.processors.policy.tree import load_tree
from otelguard.runner import run_specs
from tests.support.fake_time import FakeTime

from . import events as ev

TREE = Path(__file__).parents[1] / "policy" / "testdata" / "tree"
WORKLOAD = "k8s/shop/Deployment/cart/web"
EXCEPTION = """\
apiVersion: otelguard.dev/v1alpha1
kind: ProfileException
metadata: {{name: cart-debug-port}}
spec:
  owner: team-cart@example.com
  expires: {expires}
  reason: a debugger on 22 while the incident is investigated
  workload: k8s/shop/*
  kind: listen
  values: ["22/tcp"]
"""


def _tree(tmp_path: Path, expires: str = "2099-01-31") -> Path:
    """The test tree with an approved profile of cart/web (learned by a real stage) and a
    ProfileException for port 22."""
    clock = FakeTime(ev.T0)
    learn = ProfilesStage(Config(directory=str(tmp_path / "learn"), learn_seconds=800,
                                 bucket_seconds=100, save_interval_seconds=3600), clock.clock)
    learn.start()
    ev.learn_to_the_end(learn, clock)
    learn.shutdown()
    root = tmp_path / "tree"
    shutil.copytree(TREE, root)
    approved = root / "profiles" / "cart.yaml"
    shutil.copy(tmp_path / "learn" / file_name(WORKLOAD), approved)
    approve(approved, "alice")
    (root / "exceptions" / "cart.yaml").write_text(EXCEPTION.format(expires=expires))
    return root


def _stage(root: Path) -> ProfilesStage:
    stage = ProfilesStage(Config(policy_dir=str(root), save_interval_seconds=3600))
    stage.start()
    return stage


def _found(stage: ProfilesStage, *events: ev.Event) -> list[dict[str, object]]:
    return [a for a, _ in ev.detections(stage.process(ev.batch(ev.pod("d"), *events)))]


def test_the_trees_profile_is_enforced_with_its_exception_and_revision(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _tree(tmp_path)
    assert otelguard_main(["policy", "validate", str(root)]) == 0
    out = capsys.readouterr().out
    assert "ACTIVE    exception cart-debug-port -> profile listen on k8s/shop/*" in out
    assert f"PROFILE   {WORKLOAD}" in out and "approved" in out
    stage = _stage(root)
    before = sorted(p.name for p in (root / "profiles").iterdir())
    assert _found(stage, ev.listen(8080), ev.listen(22)) == []  # allowed, and excepted
    [dev] = _found(stage, ev.listen(2222))
    assert dev[S.ANOMALY_VALUE] == "2222/tcp"
    assert dev[S.POLICY_REVISION] == load_tree(root).revision
    stage.sync()
    stage.shutdown()
    assert sorted(p.name for p in (root / "profiles").iterdir()) == before  # never written
    assert load_tree(root).revision == dev[S.POLICY_REVISION]


def test_an_expired_profile_exception_stops_applying_and_says_so(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = _tree(tmp_path, expires="2020-01-31")
    tree = load_tree(root)
    assert [e.name for e in tree.expired] == ["audit-tool-2020", "cart-debug-port"]
    with caplog.at_level(logging.WARNING):
        stage = _stage(root)
    assert "profile exception" not in caplog.text or "cart-debug-port" in caplog.text
    [dev] = _found(stage, ev.listen(22))
    assert dev[S.ANOMALY_VALUE] == "22/tcp"
    stage.shutdown()


def test_an_exception_expires_while_the_stage_runs(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = _tree(tmp_path, expires="2030-06-30")
    stage = _stage(root)
    assert stage._policy is not None
    assert _found(stage, ev.listen(22)) == []
    stage._policy._today = lambda: date(2030, 7, 1)  # the next day comes
    with caplog.at_level(logging.WARNING):
        stage.sync()
    assert "profile exception 'cart-debug-port'" in caplog.text
    assert "owner team-cart@example.com" in caplog.text and "expired on 2030-06-30" in caplog.text
    assert [a[S.ANOMALY_VALUE] for a in _found(stage, ev.listen(22))] == ["22/tcp"]
    stage.shutdown()


def test_a_broken_tree_refuses_start_and_keeps_the_running_one(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = _tree(tmp_path)
    stage = _stage(root)
    revision = load_tree(root).revision
    bad = root / "exceptions" / "cart.yaml"
    bad.write_text(EXCEPTION.format(expires="2099-01-31").replace("kind: listen",
                                                                  "kind: lisen"))
    with caplog.at_level(logging.ERROR):
        stage.sync()
    assert f"{bad}:9: spec.kind: must be one of" in caplog.text  # the key's line
    assert stage._policy is not None and stage._policy.revision == revision
    assert _found(stage, ev.listen(22)) == []  # the running tree's exception still applies
    stage.shutdown()
    with pytest.raises(ConfigError, match="spec.kind: must be one of"):
        _stage(root)


def test_policy_flag_adds_the_profiles_stage(tmp_path: Path) -> None:
    specs = run_specs(None, None, policy=str(TREE))
    types = [s.type for s in specs]
    assert types.index("profiles") == types.index("noise_control") - 1
    [profiles] = [s for s in specs if s.type == "profiles"]
    assert profiles.config.policy_dir == str(TREE)
    with_dir = run_specs(None, None, profiles=str(tmp_path / "learned"), policy=str(TREE))
    [profiles] = [s for s in with_dir if s.type == "profiles"]
    assert (profiles.config.policy_dir, profiles.config.directory) == (
        str(TREE), str(tmp_path / "learned"))


def test_policy_test_replays_the_trees_profiles_and_their_exceptions(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``otelguard policy test``: a capture (as `--output jsonl:` writes it) replayed through
    the tree gives the profile deviations too, minus what a ProfileException covers."""
    from otelguard.transport.jsonlines import JsonLinesTransport

    root = _tree(tmp_path)
    cap = tmp_path / "capture.jsonl"
    out = JsonLinesTransport(str(cap))
    assert out.export_logs(ev.batch(ev.pod("d"), ev.listen(8080), ev.listen(22),
                                    ev.listen(2222))).ok
    out.shutdown()
    capsys.readouterr()
    assert otelguard_main(["policy", "test", str(root), "--replay", str(cap)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "3 record(s) replayed, 1 detection(s)" in lines[0]
    [(priority, *rule, record)] = [line.split() for line in lines[1:]]
    assert " ".join(rule) == "Unexpected listening port" and record.startswith("record=uid-")


def test_a_profile_not_approved_in_the_tree_is_not_enforced(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert otelguard_main(["policy", "validate", str(TREE)]) == 0
    [line] = [x for x in capsys.readouterr().out.splitlines() if x.startswith("PROFILE")]
    assert line.startswith(f"PROFILE   {WORKLOAD}") and line.endswith(
        " learning (not enforced: only approved profiles run)")
    stage = _stage(TREE)  # the testdata tree's cart profile is still learning
    assert stage._policy is not None and stage._policy.workloads == frozenset()
    assert _found(stage, ev.listen(2222)) == []
    stage.shutdown()
