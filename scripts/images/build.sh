#!/usr/bin/env bash
# `make images`: builds otelguard's container images on this machine without any image registry,
# into OCI archives that `ctr -n k8s.io images import` loads under the references below.
# Usage: build.sh [all | agent | processor | collector ...]
#
#  1. Debian packages: buildah (daemonless OCI builder), mmdebstrap (installed when missing).
#  2. Base: a Debian 12 minbase rootfs made by mmdebstrap from this machine's Debian mirror,
#     committed as docker.io/library/debian:12-slim into a private buildah store
#     ($OTELGUARD_CACHE/images/store), so the Containerfiles' `FROM debian:12-slim` resolves
#     with --pull=never.
#  3. Images: `buildah bud` of deploy/images/*.Containerfile, pushed to
#     $OTELGUARD_CACHE/images/<name>-<key>.oci.tar, with <name>.oci.tar a symlink to it. The key
#     hashes the Containerfile, the base's key and the image's inputs (project sources, or the
#     Collector binary), so an unchanged image is a cache hit in well under a second.
# Environment: OTELGUARD_CACHE (default ~/.cache/otelguard); OTELGUARD_IMAGE_ISOLATION (buildah
# --isolation; default: oci (runc) when a probe RUN works, else chroot); OTELGUARD_IMAGE_STORE_MAX_MB
# (default 6144): past this size the store drops the layers no tagged image uses (the next build
# of a changed image then redoes its package layers: about a minute more).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export OTELGUARD_CACHE="${OTELGUARD_CACHE:-$HOME/.cache/otelguard}"
OUT="$OTELGUARD_CACHE/images"
STORE="$OUT/store"
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$ROOT/pyproject.toml")
BASE_REF=docker.io/library/debian:12-slim
log() { printf '[images] %s\n' "$*"; }
# shellcheck source=scripts/images/keys.sh
source "$ROOT/scripts/images/keys.sh"

names=(agent processor collector)
[ "${1:-all}" = all ] || names=("$@")
for n in "${names[@]}"; do
  [ -n "$(image_ref "$n")" ] || { echo "[images] unknown image $n (agent|processor|collector)" >&2; exit 2; }
done

mkdir -p "$OUT"
exec 9>"$OUT/.build.lock"
flock 9

need=()
for p in buildah mmdebstrap; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need+=("$p")
done
if ((${#need[@]})); then
  log "installing Debian packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q "${need[@]}" >/dev/null
fi
bah() { buildah --root "$STORE/root" --runroot "$STORE/run" --storage-driver overlay "$@"; }
# working containers an interrupted build left behind (the store is ours alone, under the lock)
bah rm --all >/dev/null 2>&1 || true

# ---- base: mmdebstrap from the mirror apt uses here (first deb.debian.org-style URI)
uris=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
  | sed -nE 's/^URIs: *//p; s/^deb (\[[^]]*\] )?([^ ]+) .*/\2/p' | tr ' ' '\n' | sed 's|/$||' || true)
mirror=$(grep -E '/debian$' <<<"$uris" | head -n1 || true)
mirror=${mirror:-http://deb.debian.org/debian}
security=$(grep -E '/debian-security$' <<<"$uris" | head -n1 || true)
security=${security:-${mirror%/debian}/debian-security}
MM=(mmdebstrap --variant=minbase --mode=root --format=tar
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*'
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias'
  --customize-hook="upload $ROOT/scripts/images/apt-clean.conf /etc/apt/apt.conf.d/docker-clean"
  --customize-hook='rm -f "$1"/var/cache/apt/archives/*.deb "$1"/var/cache/apt/*.bin'
  bookworm)
SOURCES=("deb $mirror bookworm main" "deb $mirror bookworm-updates main" "deb $security bookworm-security main")
base_key=$( { printf '%s\n' "${MM[@]/$ROOT/}" "${SOURCES[@]}"; cat "$ROOT/scripts/images/apt-clean.conf"; } | sha256sum | cut -c1-12)
base_tar="$OUT/base-debian12-$base_key.tar"
rm -f "$OUT"/base-*.tar.tmp
if [ ! -f "$base_tar" ]; then
  log "base: mmdebstrap Debian 12 minbase from $mirror (first time; minutes)"
  start=$SECONDS
  nice "${MM[@]}" "$base_tar.tmp" "${SOURCES[@]}" 2>&1 | sed -u 's/^/[images] base: /' | grep -v ' I: ' || true
  [ -s "$base_tar.tmp" ] || { log "base: mmdebstrap failed"; exit 1; }
  mv "$base_tar.tmp" "$base_tar"
  log "base: made in $((SECONDS - start))s ($(du -m "$base_tar" | cut -f1) MiB)"
fi
if [ "$(bah inspect --type image --format '{{index .ImageAnnotations "org.otelguard.base.key"}}' "$BASE_REF" 2>/dev/null)" != "$base_key" ]; then
  start=$SECONDS
  c=$(bah from --pull=never scratch)
  bah add --quiet "$c" "$base_tar" /
  bah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --cmd bash --os linux --arch amd64 --annotation "org.otelguard.base.key=$base_key" "$c"
  bah commit --quiet --rm "$c" "$BASE_REF" >/dev/null
  log "base: imported as $BASE_REF in $((SECONDS - start))s"
fi

# ---- isolation: runc (oci) when a RUN works with it here, else chroot; probed on the first miss
isolation=${OTELGUARD_IMAGE_ISOLATION:-}
pick_isolation() {
  [ -z "$isolation" ] || return 0
  isolation=chroot
  local c
  c=$(bah from --pull=never "$BASE_REF")
  if bah run --isolation oci "$c" -- true >/dev/null 2>&1; then isolation=oci; fi
  bah rm "$c" >/dev/null
}

# ---- images
# apt/dpkg progress lines (one per package) are dropped from the log; errors stay
APT_NOISE='^(Get:|Selecting previously|Preparing to unpack|Unpacking|Setting up|Processing triggers|\(Reading database|debconf: )'
# The agent and the processor share one context (the project's sources, and the wheels built
# once for both on a miss), so they share the Containerfile's build-stage layers too.
ctxs=()
trap 'rm -rf "${ctxs[@]}"' EXIT
og_ctx=""
wheels=0
for n in "${names[@]}"; do
  ref=$(image_ref "$n")
  name=${ref#*/otelguard/}; name=${name%%:*}
  if [ "$n" = collector ]; then
    bin="$OTELGUARD_CACHE/otelcol/otelcol-otelguard"
    if [ ! -x "$bin" ]; then
      log "$n: no Collector binary in the stack cache; building it (scripts/stack/build.sh otelcol)"
      bash "$ROOT/scripts/stack/build.sh" otelcol
    fi
    ctx=$(mktemp -d "$OUT/.ctx-$n.XXXXXX") && ctxs+=("$ctx")
    cp "$bin" "$ctx/otelcol-otelguard"
    file="$ROOT/deploy/images/collector.Containerfile"
    target=()
  else
    if [ -z "$og_ctx" ]; then
      og_ctx=$(mktemp -d "$OUT/.ctx-otelguard.XXXXXX") && ctxs+=("$og_ctx")
      (cd "$ROOT" && tar -c --exclude=__pycache__ --exclude='*.pyc' pyproject.toml README.md src \
        deploy/images/wheels/README.md native/Cargo.toml native/Cargo.lock native/pyproject.toml \
        native/otelguard_native.pyi native/src) | tar -x -C "$og_ctx"
    fi
    ctx=$og_ctx
    file="$ROOT/deploy/images/otelguard.Containerfile"
    target=(--target "$n")
  fi
  key=$(image_key "$file" "$base_key" "$n" "$ctx")
  archive="$OUT/$name-$key.oci.tar"
  if [ -f "$archive" ]; then
    log "$n: cached at $archive"
  else
    pick_isolation
    log "$n: building $ref (isolation $isolation)"
    start=$SECONDS
    if [ "$n" != collector ] && ((wheels == 0)); then
      # RUN steps reach Debian's mirror but not PyPI here (its TLS proxy's CA is the host's), so
      # the host's pip builds the wheels into the context; the Containerfile installs only those.
      # (from a copy: pip builds in the tree it is given, and the context must stay as keyed)
      src=$(mktemp -d "$OUT/.src.XXXXXX") && ctxs+=("$src")
      cp -a "$ctx/." "$src/"
      python3 -m pip wheel -q --wheel-dir "$ctx/deploy/images/wheels" "$src" 2>&1 | sed -u "s/^/[images] $n: pip: /"
      # the native ring reader (native/, docs/architecture.md#data-flow) with the cargo and
      # maturin `make setup` used; without them the agent runs the Python ring reader
      cargo=$(command -v cargo || echo "$HOME/.cargo/bin/cargo")
      if [ -x "$cargo" ] && [ -x "$ROOT/.venv/bin/maturin" ]; then
        PATH="$(dirname "$cargo"):$PATH" "$ROOT/.venv/bin/maturin" build --release --quiet \
          -m "$src/native/Cargo.toml" -i python3 -o "$ctx/deploy/images/wheels" 2>&1 \
          | sed -u "s/^/[images] $n: maturin: /"
      else
        log "$n: no cargo or .venv/bin/maturin (make setup): the image gets no native ring reader"
      fi
      wheels=1
    fi
    BUILDAH_ISOLATION=$isolation bah bud --pull=never --layers --format oci -f "$file" \
      "${target[@]}" --build-arg "VERSION=$VERSION" --network host \
      -t "$ref" "$ctx" 2>&1 | grep --line-buffered -vE "$APT_NOISE" | sed -u "s/^/[images] $n: /"
    rm -f "$archive.tmp"
    bah push --quiet "$ref" "oci-archive:$archive.tmp:$ref"
    mv "$archive.tmp" "$archive"
    find "$OUT" -maxdepth 1 -name "$name-*.oci.tar" ! -name "$(basename "$archive")" -delete
    log "$n: built in $((SECONDS - start))s: $archive ($(du -m "$archive" | cut -f1) MiB)"
  fi
  ln -sfn "$(basename "$archive")" "$OUT/$name.oci.tar"
done

# Every rebuild leaves the previous image's layers behind (tags move to the new one): without a
# bound the store grows by a few hundred MiB per source change.
store_mb=$(du -sm "$STORE" 2>/dev/null | cut -f1)
if [ "${store_mb:-0}" -gt "${OTELGUARD_IMAGE_STORE_MAX_MB:-6144}" ]; then
  bah rmi --prune >/dev/null 2>&1 || true
  log "store was ${store_mb} MiB (> ${OTELGUARD_IMAGE_STORE_MAX_MB:-6144}): pruned unused layers, now $(du -sm "$STORE" | cut -f1) MiB"
fi
