"""The real ``helm`` (stack component "helm") run on the otelguard chart, for tests.

    require_helm()                                   # fail in CI / skip elsewhere when not built
    docs = template({"processor": {"replicas": 3}})  # rendered objects, as dicts
    run_helm("lint", "--strict", str(CHART))         # any helm command; CompletedProcess

Values are passed as a YAML file (``--values``), never ``--set``, so types stay what the test
wrote. The release is "otelguard" in namespace "otelguard", as deploy/ is rendered.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

from tests.support.kube import CACHE
from tests.support.prerequisites import require_file
from tests.support.stack import ROOT

CHART = ROOT / "deploy" / "helm" / "otelguard"
RELEASE = NAMESPACE = "otelguard"


def helm_binary() -> Path:
    """scripts/render_deploy.py finds it the same way (OTELGUARD_HELM, else the stack cache)."""
    return Path(os.environ.get("OTELGUARD_HELM", CACHE / "helm" / "helm"))


def require_helm() -> None:
    require_file(helm_binary(), "run `bash scripts/stack/build.sh helm` (or `make stack-build`)")


_HOME = Path(tempfile.gettempdir()) / f"otelguard-helm-home-{os.getuid()}"


def run_helm(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """helm with its cache/config/data homes in a temp dir (never the user's ~/.config/helm)."""
    env = {**os.environ, **{f"HELM_{kind}_HOME": str(_HOME / kind.lower())
                            for kind in ("CACHE", "CONFIG", "DATA")}}
    return subprocess.run([str(helm_binary()), *args], capture_output=True, text=True,
                          timeout=timeout, check=False, env=env)


def template(values: dict[str, Any] | None = None, *extra: str) -> list[dict[str, Any]]:
    """``helm template`` of the chart with ``values`` over its defaults; raises with helm's
    stderr when rendering fails."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump(values or {}, f)
        f.flush()
        res = run_helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE,
                       "--values", f.name, *extra)
    if res.returncode != 0:
        raise AssertionError(f"helm template failed:\n{res.stderr}")
    return [d for d in yaml.safe_load_all(res.stdout) if d]


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The one object of ``kind`` named ``name``."""
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: found {len(found)} in {[(d['kind'], d['metadata']['name']) for d in docs]}"
    return found[0]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels only, as the chart writes them) matches ``labels``."""
    assert set(selector) <= {"matchLabels"}, f"unexpected selector keys: {selector}"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())
