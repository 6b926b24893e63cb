# Shared by scripts/cluster/up.sh and down.sh: names, addresses and paths of the one-node cluster.
# Documented in docs/stack.md ("Real one-node cluster"). Sourced, not run.
# shellcheck shell=bash disable=SC2034
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE="${OTELGUARD_CACHE:-$HOME/.cache/otelguard}"
# All of the cluster's files (config, PKI, etcd data, containerd's content, kubelet's pods, logs).
DIR="${OTELGUARD_CLUSTER_DIR:-/var/lib/otelguard-cluster}"
# Sockets and runtime state: short paths (a unix socket path has 107 bytes at most), on tmpfs.
RUNDIR="${OTELGUARD_CLUSTER_RUNDIR:-/run/otelguard-cluster}"
K8S_BIN="${OTELGUARD_KUBERNETES_BIN:-$CACHE/kubernetes}"
COREDNS_BIN="${OTELGUARD_COREDNS_BIN:-$CACHE/coredns/coredns}"

# Documentation address ranges only (RFC 5737), and every address on this host.
BRIDGE=ogk8s0
POD_CIDR=198.51.100.0/24
HOST_IP=198.51.100.1          # the bridge: the node's InternalIP, the API server, CoreDNS, kubelet
# The upper half of TEST-NET-3 only: on this kind of machine the registries (Debian, PyPI, the
# Go proxy) resolve to a proxy at 203.0.113.80, which a ClusterIP must never shadow (kube-proxy's
# DNAT also applies to the host's own traffic); up.sh refuses ranges that hold such an address.
SERVICE_CIDR=203.0.113.128/25
API_SERVICE_IP=203.0.113.129  # the `kubernetes` Service
API_PORT=6443
DNS_IP=$HOST_IP
CLUSTER_DOMAIN=cluster.local
FWD_CHAIN=OTELGUARD-CLUSTER   # our filter chain, jumped to from FORWARD

CONTAINERD_SOCK="$RUNDIR/containerd.sock"
PIDS="$DIR/run"
LOGS="$DIR/log"
ACTIVE=/run/otelguard-cluster.active   # the state dir of the cluster this host runs (one at a time)

log() { printf '[cluster] %s\n' "$*"; }
die() { printf '[cluster] error: %s\n' "$*" >&2; exit 1; }

running() { [ -f "$PIDS/$1.pid" ] && kill -0 "$(cat "$PIDS/$1.pid")" 2>/dev/null; }

kubectl_admin() { "$K8S_BIN/kubectl" --kubeconfig "$DIR/admin.kubeconfig" "$@"; }
ctr_k8s() { ctr --address "$CONTAINERD_SOCK" -n k8s.io "$@"; }

# stop NAME: the process group recorded in $PIDS/NAME.pid, SIGKILL after 15 s.
# shellcheck disable=SC1091
source "$ROOT/scripts/stack/pidfile.sh"
stop() { stop_pidfile "$PIDS/$1.pid" cluster 15; }
