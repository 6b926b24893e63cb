#!/usr/bin/env bash
# Builds the Go parts of the stack once into the cache, keyed by version; prints progress.
# Usage: build.sh all | otelcol | jaeger | loki | kubernetes | coredns | helm
# Each component is built by scripts/stack/components/<name>.sh, which receives
# OUT (the directory to put its binary into) and the versions from versions.env.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck disable=SC1091
source "$HERE/versions.env"
export OTELGUARD_CACHE="${OTELGUARD_CACHE:-$HOME/.cache/otelguard}"
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
components=(otelcol jaeger loki kubernetes coredns helm)
# One build at a time per cache (two `make test` runs at once would share and remove the same
# .tmp directories): the second waits, then finds the components cached.
mkdir -p "$OTELGUARD_CACHE"
exec 9>"$OTELGUARD_CACHE/.build.lock"
flock 9
[ "${1:-all}" = all ] || components=("$@")
for c in "${components[@]}"; do
  script="$HERE/components/$c.sh"
  [ -f "$script" ] || { echo "[stack] unknown component $c" >&2; exit 2; }
  # A component script may name further inputs of its build (paths relative to the repository
  # root) on lines "# build-input: <path>"; their content is part of the cache key too.
  inputs=()
  while read -r f; do inputs+=("$HERE/../../$f"); done < <(sed -n 's/^# build-input: //p' "$script")
  # "# build-vars: <regex>" limits the versions.env lines in the key to the component's own
  # (so pinning another component does not rebuild this one); default: the whole file.
  vars=$(sed -n 's/^# build-vars: //p' "$script")
  key=$( { grep -E "^(${vars:-.*})" "$HERE/versions.env"; cat "$script" "${inputs[@]}"; } | sha256sum | cut -c1-12)
  out="$OTELGUARD_CACHE/$c-$key"
  if [ -f "$out/.done" ]; then
    echo "[stack] $c: cached at $out"
  else
    echo "[stack] $c: building into $out (first time on this machine; minutes)"
    start=$(date +%s)
    rm -rf "$out.tmp" && mkdir -p "$out.tmp"
    OUT="$out.tmp" bash "$script"
    rm -rf "$out" && mv "$out.tmp" "$out" && touch "$out/.done"
    echo "[stack] $c: built in $(( $(date +%s) - start ))s"
  fi
  ln -sfn "$out" "$OTELGUARD_CACHE/$c"
done
