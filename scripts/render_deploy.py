#!/usr/bin/env python3
"""Render deploy/*.yaml from the Helm chart deploy/helm/otelguard: one source, plain manifests out.

    python3 scripts/render_deploy.py           # copy the embedded files into the chart, render deploy/
    python3 scripts/render_deploy.py --check   # exit 1 and name every file that is not current

Two steps, both deterministic:

1. The chart embeds files that live elsewhere (the Collector's backends.yaml, the Kubernetes
   gateway config, the Prometheus rules): ``.Files.Get`` reads only inside the chart, so they
   are copied to ``deploy/helm/otelguard/files/`` (EMBEDDED below names source -> copy).
2. ``helm template`` with the chart's defaults plus deploy/helm/render-values.yaml (which
   names existing Secrets, so no generated key or token is ever written into deploy/), split by
   template into the files of deploy/ (LAYOUT), plus deploy/kustomization.yaml.

helm: $OTELGUARD_HELM, else $OTELGUARD_CACHE/helm/helm (``scripts/stack/build.sh helm``).
Stdlib only, so it runs without the project's venv.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "deploy" / "helm" / "otelguard"
RENDER_VALUES = ROOT / "deploy" / "helm" / "render-values.yaml"
RELEASE = "otelguard"
NAMESPACE = "otelguard"

# copy inside the chart -> its one source
EMBEDDED = {
    "files/collector/backends.yaml": "otel-config/collector/backends.yaml",
    "files/collector/gateway-k8s.yaml": "deploy/collector/gateway-k8s.yaml",
    "files/prometheus/otelguard.rules.yml": "otel-config/prometheus/rules/otelguard.rules.yml",
    # Helm installs crds/ before the templates (and never upgrades or deletes them)
    "crds/workloadprofiles.otelguard.dev.yaml": "src/otelguard/processors/profiles/crd.yaml",
    "crds/responserequests.otelguard.dev.yaml": "src/otelguard/response/crd.yaml",
}
# chart template -> file under deploy/, in kustomization order
LAYOUT = {
    "templates/namespace.yaml": "namespace.yaml",
    "templates/rbac.yaml": "rbac/k8s-enricher.yaml",
    "templates/networkpolicy.yaml": "networkpolicy.yaml",
    "templates/collector.yaml": "collector.yaml",
    "templates/processor.yaml": "processor.yaml",
    "templates/agent.yaml": "agent-daemonset.yaml",
}
HEADER = ("# Rendered from the Helm chart deploy/helm/otelguard (its defaults plus\n"
          "# deploy/helm/render-values.yaml) by scripts/render_deploy.py. Do not edit: change the\n"
          "# chart, then run `python3 scripts/render_deploy.py`.\n")
KUSTOMIZATION_HEAD = """\
# `kubectl apply -k deploy/` installs otelguard into namespace "otelguard" without Helm: the
# output of the chart deploy/helm/otelguard (`helm install` is the other way; its values set
# images, the cluster name and the Loki/Jaeger addresses, here the Collector's env in
# collector.yaml). Grafana dashboards and provisioning: deploy/grafana/.
# Every hop is TLS with bearer tokens, and these manifests name Secrets rather than carry any:
# create otelguard-collector-tls, otelguard-processor-tls (tls.crt, tls.key, ca.crt;
# cert-manager works), otelguard-agent-token and otelguard-processor-token (key "token")
# first, and otelguard-node-tokens (one key per node name, a random token each;
# docs/security.md#sender-identity); docs/stack.md lists their names. (The chart generates
# all five when none is named.)
"""


def helm_binary() -> Path:
    if os.environ.get("OTELGUARD_HELM"):
        return Path(os.environ["OTELGUARD_HELM"])
    cache = Path(os.environ.get("OTELGUARD_CACHE", Path.home() / ".cache" / "otelguard"))
    return cache / "helm" / "helm"


def embedded_files() -> dict[Path, str]:
    """The chart's copies, as they must read."""
    return {CHART / copy: (ROOT / source).read_text() for copy, source in EMBEDDED.items()}


def split_by_template(rendered: str) -> dict[str, list[str]]:
    """``helm template`` output -> template path (relative to the chart) -> its documents."""
    by_template: dict[str, list[str]] = {}
    for doc in re.split(r"^---\n", rendered, flags=re.MULTILINE):
        m = re.match(r"# Source: [^/]+/(\S+)\n", doc)
        if not m:
            if doc.strip():
                raise SystemExit(f"render_deploy: a rendered document without a Source line:\n{doc[:200]}")
            continue
        by_template.setdefault(m.group(1), []).append(doc[m.end():].rstrip("\n") + "\n")
    return by_template


def render(helm: Path) -> dict[Path, str]:
    """deploy/ files -> their content, from the chart as it is on disk."""
    res = subprocess.run([str(helm), "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
                          "--values", str(RENDER_VALUES)],
                         capture_output=True, text=True, timeout=120, check=False)
    if res.returncode != 0:
        raise SystemExit(f"render_deploy: helm template failed:\n{res.stderr}")
    by_template = split_by_template(res.stdout)
    unplaced = sorted(set(by_template) - set(LAYOUT))
    if unplaced:
        raise SystemExit(f"render_deploy: templates rendered with no place in deploy/: {unplaced} "
                         "(a generated Secret? render-values.yaml must name existing ones)")
    out: dict[Path, str] = {}
    for template, target in LAYOUT.items():
        docs = by_template.get(template)
        if not docs:
            raise SystemExit(f"render_deploy: {template} rendered nothing")
        out[ROOT / "deploy" / target] = HEADER + "---\n".join(docs)
    resources = "".join(f"  - {target}\n" for target in LAYOUT.values())
    out[ROOT / "deploy" / "kustomization.yaml"] = (
        KUSTOMIZATION_HEAD + "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "resources:\n" + resources)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="report stale files, write nothing")
    parser.add_argument("--helm", type=Path, default=None, help="helm binary (default: the stack build's)")
    args = parser.parse_args(argv)
    helm = args.helm or helm_binary()
    if not helm.exists():
        raise SystemExit(f"render_deploy: no helm at {helm}: run `bash scripts/stack/build.sh helm`")
    copies = embedded_files()
    if args.check:
        stale = [p for p, text in copies.items() if not p.exists() or p.read_text() != text]
        if stale:  # the render would read the stale copies: report them alone
            print("\n".join(f"stale: {p.relative_to(ROOT)}" for p in stale))
            return 1
        stale = [p for p, text in render(helm).items() if not p.exists() or p.read_text() != text]
        print("\n".join(f"stale: {p.relative_to(ROOT)}" for p in stale))
        return 1 if stale else 0
    for path, text in copies.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for path, text in render(helm).items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
