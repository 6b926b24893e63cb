"""What the wheel (and so every image) carries: each non-Python file under src/otelguard must match
a ``[tool.setuptools.package-data]`` pattern, or the installed package misses it (the agent image
once lacked the BPF headers ``*.bpf.h`` and could not compile its programs)."""

from __future__ import annotations

import fnmatch
import tomllib

from tests.support.stack import ROOT

SRC = ROOT / "src" / "otelguard"


def test_every_data_file_is_package_data() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["*"]
    data = [p for p in SRC.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")
            and "__pycache__" not in p.parts]
    assert data, "no data files found: is SRC right?"
    missing = [str(p.relative_to(SRC)) for p in data
               if not any(fnmatch.fnmatch(p.name, pat) for pat in patterns)]
    assert missing == [], f"add patterns to pyproject.toml's package-data for: {missing}"
