#!/usr/bin/env bash
# `make cluster-stop`: stops what scripts/cluster/up.sh started (by the pids it recorded) and
# leaves the host as it was: pods and their containers, network namespaces and veths removed,
# kube-proxy's iptables chains (kube-proxy --cleanup) and ours gone, the bridge deleted, every
# mount under the state dir unmounted, the sysctls up.sh changed restored, the state removed
# (logs are kept in $OTELGUARD_CLUSTER_DIR/log). Safe to run twice, or after a failed up.sh.
set -euo pipefail
# shellcheck source=scripts/cluster/lib.sh
source "$(dirname "$0")/lib.sh"
[ "$(id -u)" = 0 ] || die "needs root"
[ -d "$DIR" ] || { log "nothing at $DIR"; exit 0; }
mkdir -p "$RUNDIR"
exec 8>"$RUNDIR.lock"
flock -w 600 8 || die "another scripts/cluster/up.sh or down.sh holds $RUNDIR.lock"

# 1. Nothing may recreate or reschedule pods; then the kubelet stops every pod the CRI way
#    (containers killed, the sandbox's network torn down by CNI, its netns removed).
stop kube-controller-manager
stop kube-scheduler
if running kube-apiserver && running kubelet && running containerd; then
  kubectl_admin delete pods --all --all-namespaces --grace-period=1 --wait=true --timeout=90s \
    >/dev/null 2>&1 || log "warning: not every pod was deleted in time; removing containers directly"
  deadline=$((SECONDS + 60))
  until [ -z "$(ctr_k8s tasks ls -q 2>/dev/null)" ] || ((SECONDS > deadline)); do sleep 1; done
fi
for name in kubelet kube-proxy coredns kube-apiserver etcd; do stop "$name"; done

# 2. Whatever is left in our containerd: kill and delete its tasks and containers; remember the
#    network namespaces their sandboxes used.
netns=()
if running containerd; then
  for id in $(ctr_k8s containers ls -q 2>/dev/null); do
    ns=$(ctr_k8s containers info "$id" 2>/dev/null | python3 -c '
import json, sys
spec = json.load(sys.stdin).get("Spec") or {}
print("\n".join(n.get("path", "") for n in spec.get("linux", {}).get("namespaces", [])
                if n.get("type") == "network" and n.get("path")))' || true)
    [ -n "$ns" ] && netns+=("$ns")
    ctr_k8s tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
    for _ in $(seq 1 20); do ctr_k8s tasks delete "$id" >/dev/null 2>&1 && break; sleep 0.25; done
    ctr_k8s containers delete "$id" >/dev/null 2>&1 || true
  done
fi
stop containerd
# Shims of our containerd (their command line names our socket) that outlived it.
for p in /proc/[0-9]*; do
  cmd=$( { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null || true)
  case "$cmd" in *containerd-shim*"-address $CONTAINERD_SOCK "*) kill -KILL "${p#/proc/}" 2>/dev/null || true ;; esac
done

# 3. Network: veths still on the bridge, sandboxes' namespaces, the bridge, iptables chains.
if ip link show "$BRIDGE" >/dev/null 2>&1; then
  for veth in $(ip -o link show master "$BRIDGE" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
    ip link del "$veth" 2>/dev/null || true
  done
  ip link del "$BRIDGE"
  log "deleted bridge $BRIDGE"
fi
for ns in "${netns[@]}"; do
  umount "$ns" 2>/dev/null || true
  rm -f "$ns"
done
if [ -x "$K8S_BIN/kube-proxy" ]; then
  "$K8S_BIN/kube-proxy" --cleanup --v=0 >>"$LOGS/kube-proxy.log" 2>&1 || log "warning: kube-proxy --cleanup failed (see $LOGS/kube-proxy.log)"
fi
# What is left of KUBE-* after that is the kubelet's (KUBE-FIREWALL, KUBE-KUBELET-CANARY): one
# cluster per host, so every KUBE-* chain is ours. Jumps to them first, then the chains.
for ipt in iptables ip6tables; do
  for t in filter nat mangle; do
    chains=$("$ipt" -t "$t" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^KUBE-/ {print $2}')
    [ -n "$chains" ] || continue
    "$ipt" -t "$t" -S | awk '$1 == "-A" && $NF ~ /^KUBE-/ && $(NF-1) == "-j"' | while read -r rule; do
      # iptables -S quotes comments ("..."): eval keeps them one word each
      eval "$ipt -t $t ${rule/-A/-D}" 2>/dev/null || true
    done
    for c in $chains; do "$ipt" -t "$t" -F "$c" 2>/dev/null || true; done
    for c in $chains; do "$ipt" -t "$t" -X "$c" 2>/dev/null || true; done
  done
done
while iptables -D FORWARD -j "$FWD_CHAIN" 2>/dev/null; do :; done
iptables -F "$FWD_CHAIN" 2>/dev/null && iptables -X "$FWD_CHAIN" 2>/dev/null || true
# The portmap plugin's chains, when no other user of CNI's portmap left rules in them.
for t in nat filter; do
  for c in $(iptables -t "$t" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^CNI-HOSTPORT-/ {print $2}'); do
    [ "$(iptables -t "$t" -S "$c" | wc -l)" -le 1 ] || continue
    for parent in PREROUTING OUTPUT POSTROUTING; do
      while iptables -t "$t" -S "$parent" 2>/dev/null | grep -q -- "-j $c\$"; do
        spec=$(iptables -t "$t" -S "$parent" | grep -- "-j $c\$" | head -n1 | cut -d' ' -f3-)
        # shellcheck disable=SC2086
        iptables -t "$t" -D "$parent" $spec || break
      done
    done
    iptables -t "$t" -X "$c" 2>/dev/null || true
  done
done

# 4. Mounts under the state and run dirs (pods' volumes, containerd's rootfs and shm), deepest first.
for root in "$DIR" "$RUNDIR"; do
  awk -v r="$root/" 'index($2, r) == 1 {print $2}' /proc/self/mounts | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
done
# The kubelet links each container's log into /var/log/containers; drop the links into our dir.
for l in /var/log/containers/*.log; do
  [ -L "$l" ] && case "$(readlink "$l")" in "$DIR"/*) rm -f "$l" ;; esac
done

# The kubelet's cgroups (cgroupfs driver): empty ones only, deepest first. In the cgroup2
# hierarchy only the pod-level ones: /kubepods there is shared with the fake-container tests.
for h in /sys/fs/cgroup/*/kubepods; do
  case "$h" in */unified/*) continue ;; esac
  find "$h" -depth -type d -exec rmdir {} + 2>/dev/null || true
done
find /sys/fs/cgroup/unified/kubepods -depth -mindepth 1 -maxdepth 2 -type d -name 'pod*' \
  -exec rmdir {} + 2>/dev/null || true

# Directories up.sh found missing (the shims' /run/containerd/s, /var/log/containers), if empty.
while read -r d; do
  [ -d "$d" ] && find "$d" -depth -type d -empty -delete 2>/dev/null || true
done <"$DIR/made-dirs" 2>/dev/null || true

# 5. Kernel settings back as they were; state removed, logs kept.
for f in "$DIR"/sysctl.*; do
  [ -f "$f" ] || continue
  sysctl -qw "${f#"$DIR"/sysctl.}=$(cat "$f")" || true
  rm -f "$f"
done
find "$DIR" -mindepth 1 -maxdepth 1 ! -name log -exec rm -rf {} +
rm -rf "$RUNDIR"
[ "$(cat "$ACTIVE" 2>/dev/null)" = "$DIR" ] && rm -f "$ACTIVE"
log "down: $DIR cleaned (logs kept in $LOGS)"
