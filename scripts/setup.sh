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
log "ready: $VENV/bin/otelguard"
