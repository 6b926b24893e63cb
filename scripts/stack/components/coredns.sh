#!/usr/bin/env bash
# Builds CoreDNS from its Go module into $OUT (called by scripts/stack/build.sh, which caches by
# version): the one-node cluster's DNS server (scripts/cluster/up.sh runs it on the host).
#
# A small main module imports coremain plus only the plugins the cluster's Corefile uses
# (bind, kubernetes, cache, errors, log, health, ready, reload, loadbalance). The stock command
# links every plugin, with the cloud providers' SDKs;
# leaving those out saves most of the compile time.
# build-vars: COREDNS_VERSION
set -euo pipefail
: "${OUT:?OUT must name the output directory}"
# shellcheck disable=SC1091
[ -n "${COREDNS_VERSION:-}" ] || source "$(cd "$(dirname "$0")/.." && pwd)/versions.env"
: "${COREDNS_VERSION:?COREDNS_VERSION comes from versions.env}"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
export GOFLAGS="${GOFLAGS:--buildvcs=false} -mod=mod"
plugins=(bind kubernetes cache errors log health ready reload loadbalance)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
log() { echo "[coredns] $*"; }

log "main module in $work for github.com/coredns/coredns@v$COREDNS_VERSION (plugins: ${plugins[*]})"
go mod init otelguard.local/coredns-build >/dev/null 2>&1
{
  printf 'package main\n\nimport (\n\t"github.com/coredns/coredns/coremain"\n'
  for p in "${plugins[@]}"; do printf '\t_ "github.com/coredns/coredns/plugin/%s"\n' "$p"; done
  printf ')\n\nfunc main() { coremain.Run() }\n'
} > main.go
start=$(date +%s)
go mod edit "-require=github.com/coredns/coredns@v$COREDNS_VERSION"
go mod tidy 2>&1 | tail -n 20
log "modules ready in $(( $(date +%s) - start ))s"
start=$(date +%s)
go build -trimpath -ldflags "-s -w -X github.com/coredns/coredns/coremain.GitCommit=v$COREDNS_VERSION" -o "$OUT/coredns" .
log "compiled in $(( $(date +%s) - start ))s"
"$OUT/coredns" -version
"$OUT/coredns" -plugins | grep -qx 'kubernetes' || { log "kubernetes plugin missing from the build" >&2; exit 1; }
