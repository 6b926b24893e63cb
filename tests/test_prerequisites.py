"""A missing prerequisite fails in CI and skips, with its reason, elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import prerequisites


def test_missing_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="nothing here is missing: get it.*CI=true"):
        prerequisites.missing("nothing here is missing: get it")


@pytest.mark.parametrize("ci", ["", "false"])
def test_missing_skips_with_its_reason_elsewhere(monkeypatch: pytest.MonkeyPatch, ci: str) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match="^/no/such/file is missing: build it$"):
        prerequisites.require_file(Path("/no/such/file"), "build it")


def test_present_file_passes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CI", "true")
    prerequisites.require_file(tmp_path, "never asked")
