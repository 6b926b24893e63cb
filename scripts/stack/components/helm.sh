#!/usr/bin/env bash
# Builds the `helm` CLI (v3) from its Go module helm.sh/helm/v3 into $OUT (called by
# scripts/stack/build.sh, which caches by version). Used by the chart tests (lint, template,
# server-side dry-run) and by the renderer of deploy/ (scripts/render_deploy.py).
#
# The module has no replace directives, so `go install module/cmd@version` builds it directly.
# HELM_VERSION is a release whose k8s.io/* requirements match KUBERNETES_VERSION (v3.19 -> 0.34),
# so the module downloads overlap with the kubernetes build's. The ldflags repeat what helm's own
# Makefile stamps: the version, and the Kubernetes version `helm lint`/`template` assume
# (Capabilities.KubeVersion) when no cluster is asked.
# build-vars: HELM_
set -euo pipefail
: "${OUT:?OUT must name the output directory}"
# build.sh sources versions.env without exporting it; read it here so the script also runs standalone.
# shellcheck disable=SC1091
[ -n "${HELM_VERSION:-}" ] || source "$(cd "$(dirname "$0")/.." && pwd)/versions.env"
: "${HELM_VERSION:?HELM_VERSION comes from versions.env}" "${HELM_K8S_MINOR:?}"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=v${HELM_VERSION}"
ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=${HELM_K8S_MINOR}"
done
echo "[helm] building helm.sh/helm/v3/cmd/helm@v${HELM_VERSION} (downloads + compile: minutes on 2 cores)"
start=$(date +%s)
GOBIN="$OUT" CGO_ENABLED=0 go install -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@v${HELM_VERSION}"
echo "[helm] compiled in $(( $(date +%s) - start ))s"
"$OUT/helm" version --short
