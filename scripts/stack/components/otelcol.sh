#!/usr/bin/env bash
# Builds otelcol-otelguard, our Collector distribution, from otel-config/builder-config.yaml
# with the Collector Builder (ocb) at the pinned release. Called by scripts/stack/build.sh with
# OUT (target dir) and the versions from versions.env in the environment.
# Cost: ~10-20 min and ~3 GB of module/build cache on 2 cores the first time.
# build-input: otel-config/builder-config.yaml
# build-vars: OTELCOL_
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
MANIFEST="$ROOT/otel-config/builder-config.yaml"
# shellcheck disable=SC1091
source "$HERE/../versions.env"
: "${OUT:?OUT must be set by build.sh}" "${OTELCOL_VERSION:?}" "${OTELCOL_CORE_STABLE_VERSION:?}"

# The manifest pins its own versions (ocb cannot substitute variables); refuse a drift from
# versions.env rather than build something other than what is recorded.
# A line may deviate on purpose when it says why in a comment containing "proxy here".
bad=$(grep -E '^\s*- gomod:' "$MANIFEST" | grep -v 'proxy here' \
  | grep -vE " v(${OTELCOL_VERSION}|${OTELCOL_CORE_STABLE_VERSION})(\s|$)" || true)
if [ -n "$bad" ]; then
  echo "[otelcol] manifest versions differ from versions.env (${OTELCOL_VERSION}/${OTELCOL_CORE_STABLE_VERSION}):" >&2
  echo "$bad" >&2
  exit 1
fi

# The checksum database does not know every release the proxy serves here (it answers 404 for
# e.g. signaltometricsconnector v0.158.0), so the Collector's own module trees are exempt from it;
# go.sum still pins each module's hash for the build.
export GONOSUMDB="${GONOSUMDB:+$GONOSUMDB,}github.com/open-telemetry/opentelemetry-collector-contrib,go.opentelemetry.io/collector"

echo "[otelcol] installing builder v${OTELCOL_VERSION}"
GOBIN="$OUT/tools" go install "go.opentelemetry.io/collector/cmd/builder@v${OTELCOL_VERSION}"

work="$OUT/src"
mkdir -p "$work"
sed "s|^\(\s*output_path:\).*|\1 $work|" "$MANIFEST" > "$OUT/builder-config.yaml"
echo "[otelcol] generating and compiling (go mod tidy + go build; the long part)"
"$OUT/tools/builder" --config="$OUT/builder-config.yaml" --ldflags="-s -w" --verbose 2>&1 \
  | grep --line-buffered -vE '^\s*$' | sed -u 's/^/[otelcol] /'
mv "$work/otelcol-otelguard" "$OUT/otelcol-otelguard"
"$OUT/otelcol-otelguard" --version
# Keep the generated sources (small) for debugging; drop nothing else the cache needs.
