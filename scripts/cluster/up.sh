#!/usr/bin/env bash
# `make cluster`: a real one-node Kubernetes cluster on this host, for the real-cluster e2e tests
# and by hand. Idempotent (a second run finds everything running and only waits and re-imports);
# stop and clean up with scripts/cluster/down.sh (`make cluster-stop`). docs/stack.md
# ("Real one-node cluster") says what runs, on which addresses, and why each setting is needed.
#
#   etcd (Debian, 127.0.0.1) -> kube-apiserver (198.51.100.1:6443) <- kube-controller-manager,
#   kube-scheduler, kubelet (cgroupfs, Debian's containerd/runc, bridge CNI), kube-proxy
#   (iptables), CoreDNS (198.51.100.1:53, kubernetes plugin); pods on 198.51.100.0/24 behind the
#   bridge ogk8s0, Services on 203.0.113.128/25. Nothing is pulled: the pause and test images are
#   made here (tests/support/oci_images.py), every archive in $OTELGUARD_CACHE/images is imported.
#
# Env: OTELGUARD_CLUSTER_DIR (state, default /var/lib/otelguard-cluster), OTELGUARD_CACHE,
# OTELGUARD_CLUSTER_TIMEOUT (seconds for each wait, default 180). Prints KUBECONFIG=<path> last.
set -euo pipefail
# shellcheck source=scripts/cluster/lib.sh
source "$(dirname "$0")/lib.sh"
TIMEOUT="${OTELGUARD_CLUSTER_TIMEOUT:-180}"
[ "$(id -u)" = 0 ] || die "needs root (containers, cgroups, iptables, a bridge)"

# One cluster per host: the bridge, the addresses and kube-proxy's iptables chains are host-wide.
mkdir -p "$RUNDIR"
exec 8>"$RUNDIR.lock"
flock -w 600 8 || die "another scripts/cluster/up.sh or down.sh holds $RUNDIR.lock"
if [ -f "$ACTIVE" ] && [ "$(cat "$ACTIVE")" != "$DIR" ]; then
  other=$(cat "$ACTIVE")
  if [ -f "$other/run/kube-apiserver.pid" ] && kill -0 "$(cat "$other/run/kube-apiserver.pid")" 2>/dev/null; then
    die "a cluster from $other runs on this host; attach with OTELGUARD_CLUSTER_DIR=$other or stop it (OTELGUARD_CLUSTER_DIR=$other scripts/cluster/down.sh)"
  fi
fi
echo "$DIR" > "$ACTIVE"
mkdir -p "$DIR" "$PIDS" "$LOGS" "$DIR/pki"

# --- Debian packages and Go-built binaries ---
pkgs=(containerd runc containernetworking-plugins iptables conntrack busybox-static etcd-server openssl gcc libc6-dev iproute2 util-linux)
missing=()
for p in "${pkgs[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null
  apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian starts its own containerd from the package; ours is separate (own socket, root, state).
for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl; do
  [ -x "$K8S_BIN/$b" ] || { log "building the Kubernetes commands (scripts/stack/build.sh kubernetes)"; bash "$ROOT/scripts/stack/build.sh" kubernetes; break; }
done
[ -x "$COREDNS_BIN" ] || bash "$ROOT/scripts/stack/build.sh" coredns
NODE=$(hostname | tr '[:upper:]_' '[:lower:]-')

# start NAME CMD...: a background process in its own session; pid and log under $DIR.
# put FILE: stdin into FILE, only when the content differs (kube-proxy exits when its config
# file is written, even with the same content; a second up.sh must not stop what runs).
put() {
  local tmp
  tmp=$(mktemp "$1.XXXXXX")
  cat >"$tmp"
  if cmp -s "$tmp" "$1"; then rm -f "$tmp"; else mv -f "$tmp" "$1"; fi
}
start() {
  local name=$1; shift
  if running "$name"; then return 0; fi
  setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null 8>&- &
  echo $! >"$PIDS/$name.pid"
  log "started $name (pid $!, log $LOGS/$name.log)"
}
# wait_for WHAT PROC CMD...: until CMD succeeds; fails with PROC's log tail after $TIMEOUT s or
# as soon as PROC exits.
wait_for() {
  local what=$1 proc=$2; shift 2
  local deadline=$((SECONDS + TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    if ! running "$proc" || ((SECONDS > deadline)); then
      echo "[cluster] $what: not ready after $((TIMEOUT))s (or $proc exited); last lines of $LOGS/$proc.log:" >&2
      tail -n 40 "$LOGS/$proc.log" >&2 || true
      exit 1
    fi
    sleep 0.5
  done
  log "$what: ready"
}

# --- no cluster range may hold an address this host needs: the registries its builds reach
# (through whatever proxy they resolve to) and the networks it is routed to ---
in_cidr() { python3 -c 'import ipaddress,sys; sys.exit(ipaddress.ip_address(sys.argv[1]) not in ipaddress.ip_network(sys.argv[2]))' "$1" "$2"; }
overlaps() { python3 -c 'import ipaddress,sys; sys.exit(not ipaddress.ip_network(sys.argv[1], strict=False).overlaps(ipaddress.ip_network(sys.argv[2])))' "$1" "$2"; }
for host in deb.debian.org pypi.org files.pythonhosted.org proxy.golang.org; do
  for addr in $(getent ahostsv4 "$host" 2>/dev/null | awk '{print $1}' | sort -u); do
    for range in "$POD_CIDR" "$SERVICE_CIDR"; do
      ! in_cidr "$addr" "$range" || die "$host resolves to $addr, inside the cluster range $range: pick other documentation ranges in scripts/cluster/lib.sh"
    done
  done
done
while read -r net dev; do
  [ "$dev" = "$BRIDGE" ] && continue
  for range in "$POD_CIDR" "$SERVICE_CIDR"; do
    ! overlaps "$net" "$range" || die "the host route $net (dev $dev) overlaps the cluster range $range: pick other documentation ranges in scripts/cluster/lib.sh"
  done
done < <(ip -4 route show | awk '$1 != "default" {for (i = 1; i < NF; i++) if ($i == "dev") print $1, $(i + 1)}')

# --- kernel settings: forwarding between the bridge's ports and Services (saved for down.sh) ---
for s in net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables; do
  f="$DIR/sysctl.$s"
  [ -f "$f" ] || sysctl -n "$s" >"$f"
  sysctl -qw "$s=1"
done

# --- the bridge: pods' gateway and every host-side address of the cluster ---
if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
  ip link add "$BRIDGE" type bridge
fi
ip addr show dev "$BRIDGE" | grep -q "inet $HOST_IP/" || ip addr add "$HOST_IP/24" dev "$BRIDGE"
ip link set "$BRIDGE" up
# Pods talk to each other, to Services and to this host only: forwarded traffic that would leave
# 198.51.100.0/24 is dropped (no masquerade to the outside, no route off the machine).
iptables -N "$FWD_CHAIN" 2>/dev/null || iptables -F "$FWD_CHAIN"
iptables -A "$FWD_CHAIN" -s "$POD_CIDR" -d "$POD_CIDR" -j ACCEPT
iptables -A "$FWD_CHAIN" -s "$POD_CIDR" -j DROP
iptables -A "$FWD_CHAIN" -d "$POD_CIDR" -j DROP
iptables -C FORWARD -j "$FWD_CHAIN" 2>/dev/null || iptables -I FORWARD 1 -j "$FWD_CHAIN"

# --- PKI (once): a CA, serving certs, one client cert per component, service-account keys ---
PKI="$DIR/pki"
# cert NAME SUBJECT [SAN]: an EC P-256 key and a certificate signed by the cluster CA.
cert() {
  local name=$1 subj=$2 san=${3:-}
  [ -f "$PKI/$name.crt" ] && return 0
  local ext="basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
  if [ -n "$san" ]; then ext+="extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=$san\n"
  else ext+="extendedKeyUsage=clientAuth\n"; fi
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "$subj" \
    -keyout "$PKI/$name.key" -out "$PKI/$name.csr" 2>/dev/null
  printf "%b" "$ext" >"$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 365 -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr"
}
if [ ! -f "$PKI/ca.crt" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
    -subj "/CN=otelguard one-node cluster CA" -keyout "$PKI/ca.key" -out "$PKI/ca.crt" 2>/dev/null
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/sa.key"
  openssl ec -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
fi
cert apiserver "/CN=kube-apiserver" \
  "IP:$HOST_IP,IP:$API_SERVICE_IP,IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$CLUSTER_DOMAIN"
cert kubelet-serving "/CN=system:node:$NODE/O=system:nodes" "IP:$HOST_IP,DNS:$NODE"
cert admin "/CN=otelguard-admin/O=system:masters"
cert apiserver-kubelet-client "/CN=kube-apiserver-kubelet-client/O=system:masters"
cert kubelet "/CN=system:node:$NODE/O=system:nodes"
cert controller-manager "/CN=system:kube-controller-manager"
cert scheduler "/CN=system:kube-scheduler"
cert kube-proxy "/CN=system:kube-proxy"
cert coredns "/CN=system:coredns"

# kubeconfig NAME: for the client certificate NAME (all point at the API server on the bridge).
kubeconfig() {
  put "$DIR/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: otelguard
  cluster: {server: "https://$HOST_IP:$API_PORT", certificate-authority: "$PKI/ca.crt"}
users:
- name: $1
  user: {client-certificate: "$PKI/$1.crt", client-key: "$PKI/$1.key"}
contexts:
- name: otelguard
  context: {cluster: otelguard, user: $1}
current-context: otelguard
EOF
  chmod 600 "$DIR/$1.kubeconfig"
}
for k in admin kubelet controller-manager scheduler kube-proxy coredns; do kubeconfig "$k"; done

# --- etcd (Debian) on two loopback ports chosen once ---
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
[ -f "$DIR/etcd.ports" ] || echo "$(free_port) $(free_port)" >"$DIR/etcd.ports"
read -r etcd_port etcd_peer_port <"$DIR/etcd.ports"
ETCD_URL="http://127.0.0.1:$etcd_port"
ETCD_PEER="http://127.0.0.1:$etcd_peer_port"
start etcd /usr/bin/etcd --name otelguard --data-dir "$DIR/etcd" \
  --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
  --listen-peer-urls "$ETCD_PEER" --initial-advertise-peer-urls "$ETCD_PEER" \
  --initial-cluster "otelguard=$ETCD_PEER" --log-level warn
wait_for etcd etcd curl -fsS "$ETCD_URL/health"

start kube-apiserver "$K8S_BIN/kube-apiserver" --etcd-servers "$ETCD_URL" \
  --bind-address "$HOST_IP" --advertise-address "$HOST_IP" --secure-port "$API_PORT" \
  --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
  --client-ca-file "$PKI/ca.crt" \
  --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
  --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
  --kubelet-certificate-authority "$PKI/ca.crt" --kubelet-preferred-address-types InternalIP \
  --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
  --service-account-issuer "https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
  --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
  --service-cluster-ip-range "$SERVICE_CIDR" --allow-privileged=true --profiling=false --v=1
wait_for kube-apiserver kube-apiserver kubectl_admin get --raw /readyz

# CoreDNS reads Services, EndpointSlices, Pods and Namespaces as user system:coredns.
kubectl_admin apply -f - >/dev/null <<'EOF'
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "otelguard:coredns"}
rules:
- {apiGroups: [""], resources: [endpoints, services, pods, namespaces], verbs: [list, watch]}
- {apiGroups: [discovery.k8s.io], resources: [endpointslices], verbs: [list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "otelguard:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "otelguard:coredns"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:coredns"}
EOF

start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
  --kubeconfig "$DIR/controller-manager.kubeconfig" \
  --authentication-kubeconfig "$DIR/controller-manager.kubeconfig" \
  --authorization-kubeconfig "$DIR/controller-manager.kubeconfig" \
  --bind-address "$HOST_IP" --leader-elect=false --use-service-account-credentials=true \
  --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
  --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
  --service-cluster-ip-range "$SERVICE_CIDR" --cluster-cidr "$POD_CIDR" --allocate-node-cidrs=false \
  --profiling=false --v=1
start kube-scheduler "$K8S_BIN/kube-scheduler" --kubeconfig "$DIR/scheduler.kubeconfig" \
  --authentication-kubeconfig "$DIR/scheduler.kubeconfig" \
  --authorization-kubeconfig "$DIR/scheduler.kubeconfig" \
  --bind-address "$HOST_IP" --leader-elect=false --profiling=false --v=1

# --- containerd (Debian's binary, our own instance) and the bridge CNI network ---
mkdir -p "$DIR/containerd" "$DIR/cni/net.d"
put "$DIR/containerd/config.toml" <<EOF
version = 2
root = "$DIR/containerd/root"
state = "$RUNDIR/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$CONTAINERD_SOCK"
[ttrpc]
  address = "$CONTAINERD_SOCK.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$DIR/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.6"
  # This VM refuses to lower oom_score_adj; without this every sandbox fails in runc
  # ("can't get final child's PID from pipe").
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # pods' network namespaces under $RUNDIR, not the host-wide /var/run/netns
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$RUNDIR/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$DIR/cni/net.d"
EOF
put "$DIR/cni/net.d/10-otelguard.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "otelguard", "plugins": [
  {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": "$DIR/cni/ipam",
            "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$HOST_IP"}]],
            "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}
]}
EOF
# Host directories the shims and the kubelet create if missing; down.sh removes them when empty.
for d in /run/containerd /var/log/containers; do
  [ -e "$d" ] || grep -qx "$d" "$DIR/made-dirs" 2>/dev/null || echo "$d" >>"$DIR/made-dirs"
done
start containerd /usr/bin/containerd --config "$DIR/containerd/config.toml"
wait_for containerd containerd ctr --address "$CONTAINERD_SOCK" version

# --- images: the pause and test images made here, then every archive of the cache's images/ ---
(cd "$ROOT" && python3 -m tests.support.oci_images build --dir "$CACHE/images")
(cd "$ROOT" && python3 -m tests.support.oci_images import --dir "$CACHE/images" --address "$CONTAINERD_SOCK")

# --- kubelet ---
mkdir -p "$DIR/kubelet/root" "$DIR/kubelet/pki" "$DIR/pod-logs"
: >"$DIR/kubelet/resolv.conf"
put "$DIR/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: "$HOST_IP"
port: 10250
readOnlyPort: 0
healthzBindAddress: "$HOST_IP"
healthzPort: 10248
tlsCertFile: "$PKI/kubelet-serving.crt"
tlsPrivateKeyFile: "$PKI/kubelet-serving.key"
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "$PKI/ca.crt"}
authorization: {mode: Webhook}
containerRuntimeEndpoint: "unix://$CONTAINERD_SOCK"
# This VM: cgroup v1 controllers with cgroup2 at /sys/fs/cgroup/unified, swap on, no systemd.
cgroupDriver: cgroupfs
failSwapOn: false
failCgroupV1: false
enforceNodeAllocatable: []
localStorageCapacityIsolation: false
clusterDNS: ["$DNS_IP"]
clusterDomain: "$CLUSTER_DOMAIN"
resolvConf: "$DIR/kubelet/resolv.conf"
podLogsDir: "$DIR/pod-logs"
# Images are imported, never pulled: no image garbage collection, evictions only when nearly full.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%", "nodefs.inodesFree": "1%"}
rotateCertificates: false
serializeImagePulls: false
EOF
start kubelet "$K8S_BIN/kubelet" --config "$DIR/kubelet/config.yaml" \
  --kubeconfig "$DIR/kubelet.kubeconfig" --root-dir "$DIR/kubelet/root" \
  --cert-dir "$DIR/kubelet/pki" --hostname-override "$NODE" --node-ip "$HOST_IP" --v=1

# --- kube-proxy (iptables) ---
put "$DIR/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: "$DIR/kube-proxy.kubeconfig"}
mode: iptables
clusterCIDR: "$POD_CIDR"
hostnameOverride: "$NODE"
healthzBindAddress: "$HOST_IP:10256"
metricsBindAddress: "$HOST_IP:10249"
nodePortAddresses: ["$HOST_IP/32"]
iptables: {localhostNodePorts: false, masqueradeAll: false}
# 0: leave the host's conntrack limits and timeouts as they are (they are host-wide).
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
start kube-proxy "$K8S_BIN/kube-proxy" --config "$DIR/kube-proxy.yaml" --v=1

# --- CoreDNS on the bridge address, answering for cluster.local from the API ---
put "$DIR/Corefile" <<EOF
$CLUSTER_DOMAIN in-addr.arpa ip6.arpa {
    bind $DNS_IP
    errors
    health $HOST_IP:8080
    ready $HOST_IP:8181
    kubernetes $CLUSTER_DOMAIN in-addr.arpa ip6.arpa {
        kubeconfig $DIR/coredns.kubeconfig otelguard
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    cache 30
    loadbalance
}
EOF
start coredns "$COREDNS_BIN" -conf "$DIR/Corefile"

# --- readiness: the node, the default ServiceAccount, the kubernetes Service's name in DNS ---
node_ready() { [ "$(kubectl_admin get node "$NODE" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}')" = True ]; }
wait_for "node $NODE Ready" kubelet node_ready
wait_for "ServiceAccount default/default" kube-controller-manager kubectl_admin -n default get serviceaccount default
dns_answers() { busybox nslookup "kubernetes.default.svc.$CLUSTER_DOMAIN" "$DNS_IP" | grep -q "$API_SERVICE_IP"; }
wait_for "CoreDNS: kubernetes.default.svc.$CLUSTER_DOMAIN -> $API_SERVICE_IP" coredns dns_answers
proxy_rules() { iptables -t nat -S KUBE-SERVICES | grep -q -- "-d $API_SERVICE_IP/32"; }
wait_for "kube-proxy: the kubernetes Service's rules" kube-proxy proxy_rules
# the rules outlive kube-proxy: a last check that every process still runs (a second up.sh that
# disturbed one would otherwise report a cluster that no longer follows the API)
sleep 1
for p in etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy coredns; do
  running "$p" || { tail -n 20 "$LOGS/$p.log" >&2; die "$p is not running (log: $LOGS/$p.log)"; }
done

put "$DIR/cluster.env" <<EOF
KUBECONFIG=$DIR/admin.kubeconfig
OTELGUARD_CLUSTER_NODE=$NODE
OTELGUARD_CLUSTER_HOST_IP=$HOST_IP
OTELGUARD_CLUSTER_POD_CIDR=$POD_CIDR
OTELGUARD_CLUSTER_SERVICE_CIDR=$SERVICE_CIDR
OTELGUARD_CLUSTER_DNS=$DNS_IP
OTELGUARD_CLUSTER_CONTAINERD=$CONTAINERD_SOCK
OTELGUARD_CLUSTER_KUBECTL=$K8S_BIN/kubectl
EOF
log "up: node $NODE Ready; API https://$HOST_IP:$API_PORT; DNS $DNS_IP; pods $POD_CIDR; Services $SERVICE_CIDR"
log "images: ctr --address $CONTAINERD_SOCK -n k8s.io images ls; stop with: make cluster-stop"
echo "KUBECONFIG=$DIR/admin.kubeconfig"
