#!/usr/bin/env bash
# Builds Loki (single binary, cmd/loki) from the Go module github.com/grafana/loki/v3 at the
# pinned release. Called by scripts/stack/build.sh with OUT set.
#
# Loki's go.mod replaces its nested module pkg/push with ./pkg/push, which is not inside the
# downloaded module; a wrapper module therefore requires pkg/push at a published pseudo-version
# (LOKI_PUSH_VERSION in versions.env) and repeats Loki's other replace directives. The proxy here
# does not serve the pseudo-version of the v3.7.6 release commit itself, so LOKI_PUSH_VERSION is
# the one v3.7.6's go.mod requires; the compile below proves the API matches.
# Cost: ~15-25 min on 2 cores the first time.
# build-vars: LOKI_
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck disable=SC1091
source "$HERE/../versions.env"
: "${OUT:?OUT must be set by build.sh}" "${LOKI_VERSION:?}" "${LOKI_PUSH_VERSION:?}"
export GONOSUMDB="${GONOSUMDB:+$GONOSUMDB,}github.com/grafana"

work="$OUT/src"
mkdir -p "$work"
cd "$work"
cat > go.mod <<MOD
module otelguard.local/loki-build

go 1.26.5

require (
	github.com/grafana/loki/v3 v${LOKI_VERSION}
	github.com/grafana/loki/pkg/push ${LOKI_PUSH_VERSION}
)

// Repeated from Loki's own go.mod at v${LOKI_VERSION}, except ./pkg/push (pinned above).
replace github.com/Azure/azure-sdk-for-go => github.com/Azure/azure-sdk-for-go v68.0.0+incompatible

replace github.com/Azure/azure-storage-blob-go => github.com/MasslessParticle/azure-storage-blob-go v0.14.1-0.20240322194317-344980fda573

replace github.com/gocql/gocql => github.com/grafana/gocql v0.0.0-20200605141915-ba5dc39ece85

exclude k8s.io/client-go v8.0.0+incompatible

replace github.com/hashicorp/memberlist => github.com/grafana/memberlist v0.3.1-0.20251126142931-6f9f62ab6f86

replace github.com/grafana/regexp => github.com/grafana/regexp v0.0.0-20240518133315-a468a5bfb3bc

replace github.com/influxdata/go-syslog/v3 => github.com/leodido/go-syslog/v4 v4.3.0

replace github.com/thanos-io/objstore => github.com/grafana/objstore v0.0.0-20250728171719-b5d3b766d1b0
MOD
cat > tools.go <<'SRC'
//go:build tools

// Package tools pins cmd/loki's module so `go mod tidy` keeps its dependencies.
package tools

import _ "github.com/grafana/loki/v3/cmd/loki"
SRC
echo "[loki] resolving modules for loki v${LOKI_VERSION} (pkg/push ${LOKI_PUSH_VERSION})"
go mod tidy 2>&1 | grep -v '^go: downloading' | sed -u 's/^/[loki] /' || true
echo "[loki] compiling cmd/loki (the long part)"
go build -trimpath -ldflags="-s -w -X github.com/grafana/loki/v3/pkg/util/build.Version=${LOKI_VERSION}" \
  -o "$OUT/loki" github.com/grafana/loki/v3/cmd/loki
"$OUT/loki" -version | head -2
