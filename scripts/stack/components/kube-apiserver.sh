#!/usr/bin/env bash
# Builds kube-apiserver from Go modules into $OUT (called by scripts/stack/build.sh, which caches by version).
#
# Why a wrapper module: k8s.io/kubernetes is not meant to be depended on; its go.mod requires every
# k8s.io/* staging module at v0.0.0 and replaces them with ./staging paths that do not exist in the
# module zip. A throwaway main module re-points each of those at its published v0.<minor>.<patch> tag,
# which is the same source the release was cut from. The list of staging modules is read from the
# release's own go.mod, so a version bump needs no edit here.
# Cost: ~1 GB of module downloads on first run and several minutes of compilation on 2 cores.
set -euo pipefail
: "${OUT:?OUT must name the output directory}"
# build.sh sources versions.env without exporting it; read it here so the script also runs standalone.
# shellcheck disable=SC1091
[ -n "${KUBERNETES_VERSION:-}" ] || source "$(cd "$(dirname "$0")/.." && pwd)/versions.env"
: "${KUBERNETES_VERSION:?KUBERNETES_VERSION comes from versions.env}"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
export GOFLAGS="${GOFLAGS:--buildvcs=false} -mod=mod"

k8s="v${KUBERNETES_VERSION}"
staging_tag="v0.${KUBERNETES_VERSION#*.}"   # 1.34.2 -> v0.34.2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

echo "[kube-apiserver] wrapper module in $work for k8s.io/kubernetes@$k8s (staging at $staging_tag)"
go mod init otelguard.local/kube-apiserver-build >/dev/null 2>&1

echo "[kube-apiserver] fetching the release go.mod"
gomod=$(go mod download -json "k8s.io/kubernetes@$k8s" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
[ -f "$gomod" ] || { echo "[kube-apiserver] could not locate go.mod of k8s.io/kubernetes@$k8s" >&2; exit 1; }

# Lines like "\tk8s.io/api => ./staging/src/k8s.io/api" inside the replace block.
mapfile -t staging < <(sed -n 's#^[[:space:]]*\(k8s\.io/[A-Za-z0-9._/-]*\) => \./staging/src/.*#\1#p' "$gomod")
[ "${#staging[@]}" -gt 10 ] || { echo "[kube-apiserver] found only ${#staging[@]} staging modules in $gomod" >&2; exit 1; }
echo "[kube-apiserver] pinning ${#staging[@]} staging modules to $staging_tag"
args=()
for m in "${staging[@]}"; do args+=("-replace=$m=$m@$staging_tag"); done
go mod edit "${args[@]}" "-require=k8s.io/kubernetes@$k8s"

# A build-tagged file keeps the command in the module graph for `go mod tidy` without being compiled.
cat > tools.go <<'EOF'
//go:build tools

package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
EOF

echo "[kube-apiserver] resolving the module graph (downloads on first run)"
go mod tidy -e 2>&1 | tail -n 20

# The version stamp matters: the apiserver derives its binary/emulation version from it.
major=${KUBERNETES_VERSION%%.*}
minor=${KUBERNETES_VERSION#*.}; minor=${minor%%.*}
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$k8s -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

echo "[kube-apiserver] compiling (several minutes on 2 cores)"
start=$(date +%s)
go build -tags tools -ldflags "$ldflags" -o "$OUT/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
echo "[kube-apiserver] compiled in $(( $(date +%s) - start ))s"
"$OUT/kube-apiserver" --version
