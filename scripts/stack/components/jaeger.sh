#!/usr/bin/env bash
# Builds Jaeger v2 (the all-in-one `jaeger` binary, itself a Collector distribution) from the
# Go module github.com/jaegertracing/jaeger. Called by scripts/stack/build.sh with OUT set.
#
# Jaeger v2 releases carry two tags, v2.N.0 and a Go-module tag v1.M.0 (the module path has no
# /v2); `go install ...@v2.N.0` is not a valid module version. JAEGER_MODULE_VERSION in
# versions.env is the module tag of the pinned release. `go install pkg@version` refuses modules
# with replace directives, so a tiny wrapper module repeats Jaeger's and builds cmd/jaeger.
# The UI is the placeholder page (no `ui` build tag): tests use the HTTP query API only.
# Cost: ~8-15 min on 2 cores the first time.
# build-vars: JAEGER_
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck disable=SC1091
source "$HERE/../versions.env"
: "${OUT:?OUT must be set by build.sh}" "${JAEGER_MODULE_VERSION:?}"
# The checksum database does not know every release the proxy serves here.
export GONOSUMDB="${GONOSUMDB:+$GONOSUMDB,}github.com/jaegertracing,github.com/open-telemetry/opentelemetry-collector-contrib,go.opentelemetry.io/collector"

work="$OUT/src"
mkdir -p "$work"
cd "$work"
cat > go.mod <<MOD
module otelguard.local/jaeger-build

go 1.24.6

require github.com/jaegertracing/jaeger ${JAEGER_MODULE_VERSION}

// Repeated from jaeger's own go.mod at this version.
replace github.com/Shopify/sarama => github.com/Shopify/sarama v1.33.0
MOD
cat > tools.go <<'SRC'
//go:build tools

// Package tools pins cmd/jaeger's module so `go mod tidy` keeps its dependencies.
package tools

import _ "github.com/jaegertracing/jaeger/cmd/jaeger"
SRC
echo "[jaeger] resolving modules for jaeger ${JAEGER_MODULE_VERSION} (Jaeger v${JAEGER_VERSION})"
go mod tidy 2>&1 | grep -v '^go: downloading' | sed -u 's/^/[jaeger] /' || true
go mod download 2>&1 | sed -u 's/^/[jaeger] /'
echo "[jaeger] compiling cmd/jaeger"
go build -trimpath -ldflags="-s -w" -o "$OUT/jaeger" github.com/jaegertracing/jaeger/cmd/jaeger
"$OUT/jaeger" version 2>/dev/null | head -3 || true
