"""docs/falco-rules-coverage.md is what coverage.py generates from the engine and the case
files now: a rule change, a field change or a new case that is not regenerated fails here."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

from otelguard.processors.detection.coverage import FILES, write
from otelguard.processors.detection.engine import DEFAULT_RULE_FILES

from .casefile import CASES, TESTDATA

DOC = Path(__file__).resolve().parents[3] / "docs" / "falco-rules-coverage.md"


def test_coverage_doc_is_generated_from_the_engine_and_the_proofs(tmp_path: Path) -> None:
    shutil.copy(DEFAULT_RULE_FILES[0], tmp_path / FILES[0])
    for name in FILES[1:]:
        shutil.copy(TESTDATA / name, tmp_path / name)
    out = io.StringIO()
    assert write(tmp_path, out, CASES) == 0
    text = out.getvalue()
    assert "no case" not in text and "fires, quiet on near miss" in text
    assert text == DOC.read_text(), (
        "regenerate: python -m otelguard.processors.detection.coverage --falco-dir "
        "src/otelguard/rules --cases tests/processors/detection/cases "
        "> docs/falco-rules-coverage.md")
