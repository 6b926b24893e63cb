#!/usr/bin/env bash
# Installs what otelguard needs on a Debian 12 host, idempotently; quick when nothing is missing.
#  1. Debian packages: BCC (python3-bpfcc, bpfcc-tools), kernel headers, venv, Prometheus, etcd.
#  2. Kernel filesystems BCC and doctor read: tracefs, debugfs, securityfs (mounted if absent).
#  3. Kernel headers: BCC compiles BPF C at load time against /lib/modules/$(uname -r)/build.
#     When no headers package exists for the running kernel, link the newest Debian
#     linux-headers-* there (build -> arch part, source -> common part). That is safe for us
#     because our programs read only tracepoint fields and helpers, never kernel struct offsets;
#     tracepoint layouts come from tracefs at load time. `otelguard doctor` reports which was used.
#  4. A virtualenv at .venv with the project (editable) and test deps; Debian's bcc module is made
#     visible to it through a .pth file that exposes only the bcc package.
#  5. The native ring reader (native/: Rust + PyO3, module otelguard_native): built with maturin
#     (from PyPI, into .venv) and installed into .venv when cargo is on PATH or in ~/.cargo/bin;
#     rebuilt when a file under native/ changes. Without cargo the sensor uses the Python reader
#     (src/otelguard/ebpf/ringbuf.py) and this step says so.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV="$ROOT/.venv"
PY=/usr/bin/python3
log() { printf '[setup] %s\n' "$*"; }

# jq, bzip2, libmagic-mgc: real Debian packages the risk tests build a container root from
# (tests/support/rootfs.py); rpm: makes the rpm sqlite database tests/risk/test_databases.py reads
pkgs=(python3-bpfcc bpfcc-tools python3-venv python3-pip linux-headers-amd64 prometheus etcd-server etcd-client iproute2 procps nftables jq bzip2 libmagic-mgc rpm)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q "${missing[@]}" >/dev/null
fi

mountpoint -q /sys/kernel/tracing 2>/dev/null || mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || log "warning: could not mount tracefs"
mountpoint -q /sys/kernel/debug 2>/dev/null || mount -t debugfs nodev /sys/kernel/debug 2>/dev/null || true
mountpoint -q /sys/kernel/security 2>/dev/null || mount -t securityfs none /sys/kernel/security 2>/dev/null || true

KDIR="/lib/modules/$(uname -r)"
if [ ! -e "$KDIR/build/include/generated" ] && [ ! -e "$KDIR/build/include/linux" ]; then
  arch_dir=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | grep -v -- '-rt-\|-cloud-' | sort -V | tail -n1 || true)
  [ -n "$arch_dir" ] || arch_dir=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n1 || true)
  if [ -n "$arch_dir" ]; then
    common_dir="${arch_dir%-amd64}-common"
    mkdir -p "$KDIR"
    ln -sfn "$arch_dir" "$KDIR/build"
    [ -d "$common_dir" ] && ln -sfn "$common_dir" "$KDIR/source"
    log "no headers for $(uname -r): linked $arch_dir (fallback; we use no struct offsets)"
  else
    log "warning: no linux-headers-* found under /usr/src; BCC will not compile"
  fi
fi

stamp="$VENV/.otelguard-setup"
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PY" -m venv "$VENV"
fi
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if [ -d /usr/lib/python3/dist-packages/bcc ]; then
  mkdir -p "$VENV/debian-bcc"
  ln -sfn /usr/lib/python3/dist-packages/bcc "$VENV/debian-bcc/bcc"
  echo "$VENV/debian-bcc" > "$site/debian-bcc.pth"
fi
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
  log "installing otelguard and its dependencies into .venv"
  "$VENV/bin/pip" install -q --upgrade pip >/dev/null
  "$VENV/bin/pip" install -q -e "$ROOT[test]"
  touch "$stamp"
fi
native_stamp="$VENV/.otelguard-native"
CARGO=$(command -v cargo || true)
if [ -z "$CARGO" ] && [ -x "$HOME/.cargo/bin/cargo" ]; then CARGO="$HOME/.cargo/bin/cargo"; fi
if [ -z "$CARGO" ]; then
  log "cargo not found: the native ring reader is not built; the sensor uses the Python reader"
elif [ ! -f "$native_stamp" ] || ! "$VENV/bin/python" -c 'import otelguard_native' 2>/dev/null \
    || [ -n "$(find "$ROOT/native" -path "$ROOT/native/target" -prune -o -type f -newer "$native_stamp" -print | head -n1)" ]; then
  log "building the native ring reader (native/, cargo $("$CARGO" --version | cut -d' ' -f2) + maturin)"
  "$VENV/bin/pip" install -q "maturin>=1.5,<2"
  rm -rf "$ROOT/native/target/wheels"
  PATH="$(dirname "$CARGO"):$PATH" "$VENV/bin/maturin" build --release --quiet \
    -m "$ROOT/native/Cargo.toml" -i "$VENV/bin/python" -o "$ROOT/native/target/wheels"
  "$VENV/bin/pip" install -q --force-reinstall --no-deps "$ROOT"/native/target/wheels/otelguard_native-*.whl
  touch "$native_stamp"
fi
log "ready: $VENV/bin/otelguard"
