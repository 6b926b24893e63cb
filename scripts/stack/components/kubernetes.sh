#!/usr/bin/env bash
# Builds the Kubernetes commands the tests and the one-node cluster run (kube-apiserver, kubelet,
# kube-controller-manager, kube-scheduler, kube-proxy, and kubectl for people) from Go modules
# into $OUT, in ONE `go build` so the packages they share compile once (called by
# scripts/stack/build.sh, which caches by version).
#
# Why a wrapper module: k8s.io/kubernetes is not meant to be depended on; its go.mod requires every
# k8s.io/* staging module at v0.0.0 and replaces them with ./staging paths that do not exist in the
# module zip. A throwaway main module re-points each of those at its published v0.<minor>.<patch> tag,
# which is the same source the release was cut from. The list of staging modules is read from the
# release's own go.mod, so a version bump needs no edit here.
# Cost: ~1 GB of module downloads on first run and the compile times measured in docs/stack.md.
# build-vars: KUBERNETES_VERSION
set -euo pipefail
: "${OUT:?OUT must name the output directory}"
# build.sh sources versions.env without exporting it; read it here so the script also runs standalone.
# shellcheck disable=SC1091
[ -n "${KUBERNETES_VERSION:-}" ] || source "$(cd "$(dirname "$0")/.." && pwd)/versions.env"
: "${KUBERNETES_VERSION:?KUBERNETES_VERSION comes from versions.env}"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
export GOFLAGS="${GOFLAGS:--buildvcs=false} -mod=mod"
cmds=(kube-apiserver kubelet kube-controller-manager kube-scheduler kube-proxy kubectl)

k8s="v${KUBERNETES_VERSION}"
staging_tag="v0.${KUBERNETES_VERSION#*.}"   # 1.34.2 -> v0.34.2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
log() { echo "[kubernetes] $*"; }

log "wrapper module in $work for k8s.io/kubernetes@$k8s (staging at $staging_tag)"
go mod init otelguard.local/kubernetes-build >/dev/null 2>&1

log "fetching the release go.mod"
start=$(date +%s)
gomod=$(go mod download -json "k8s.io/kubernetes@$k8s" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
[ -f "$gomod" ] || { log "could not locate go.mod of k8s.io/kubernetes@$k8s" >&2; exit 1; }

# Lines like "\tk8s.io/api => ./staging/src/k8s.io/api" inside the replace block.
mapfile -t staging < <(sed -n 's#^[[:space:]]*\(k8s\.io/[A-Za-z0-9._/-]*\) => \./staging/src/.*#\1#p' "$gomod")
[ "${#staging[@]}" -gt 10 ] || { log "found only ${#staging[@]} staging modules in $gomod" >&2; exit 1; }
log "pinning ${#staging[@]} staging modules to $staging_tag"
args=()
for m in "${staging[@]}"; do args+=("-replace=$m=$m@$staging_tag"); done
go mod edit "${args[@]}" "-require=k8s.io/kubernetes@$k8s"

# A build-tagged file keeps the commands in the module graph for `go mod tidy` without being compiled.
{
  printf '//go:build tools\n\npackage tools\n\nimport (\n'
  for c in "${cmds[@]}"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$c"; done
  printf ')\n'
} > tools.go

log "resolving the module graph (downloads on first run)"
go mod tidy -e 2>&1 | tail -n 20
go mod download
log "modules ready in $(( $(date +%s) - start ))s"

# The version stamp matters: the apiserver derives its binary/emulation version from it, and the
# kubelet reports it as the node's version.
major=${KUBERNETES_VERSION%%.*}
minor=${KUBERNETES_VERSION#*.}; minor=${minor%%.*}
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$k8s -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

pkgs=()
for c in "${cmds[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
log "compiling ${cmds[*]} in one go build"
start=$(date +%s)
go build -tags tools -ldflags "$ldflags" -o "$OUT/" "${pkgs[@]}"
log "compiled in $(( $(date +%s) - start ))s"
for c in "${cmds[@]}"; do
  [ -x "$OUT/$c" ] || { log "$OUT/$c is missing after the build" >&2; exit 1; }
  if [ "$c" = kubectl ]; then "$OUT/$c" version --client; else "$OUT/$c" --version; fi
done
