#!/usr/bin/env bash
# Starts the local otelguard stack on 127.0.0.1 (make stack): Loki, Jaeger, Prometheus, the
# otelguard Collector, and etcd + kube-apiserver when tests/support/kube.py is there.
# Binaries come from scripts/stack/build.sh (~/.cache/otelguard); configs from otel-config/.
# Pids, logs and data under $OTELGUARD_CACHE/run (stop with scripts/stack/stop.sh).
#
#   OTELGUARD_STACK_MODE=backends (default)  pipeline (b): agent -> processor -> Collector -> backends
#   OTELGUARD_STACK_MODE=gateway             pipeline (a): agent -> Collector -> processor -> Collector
#   OTELGUARD_STACK_KUBE=0                   skip the kube-apiserver
# Ports are the configs' defaults; override any with the variables documented in otel-config/
# (tests/e2e/test_stack_scripts.py runs this script on free ports that way), plus
#   OTELGUARD_PROMETHEUS_PORT (9090) and OTELGUARD_STACK_RUN (the run directory).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CACHE="${OTELGUARD_CACHE:-$HOME/.cache/otelguard}"
RUN="${OTELGUARD_STACK_RUN:-$CACHE/run}"
MODE="${OTELGUARD_STACK_MODE:-backends}"
mkdir -p "$RUN"

running() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

# start NAME CMD...: background process in its own session, pid and log in $RUN.
start() {
  local name=$1; shift
  if running "$name"; then echo "[stack] $name already running (pid $(cat "$RUN/$name.pid"))"; return; fi
  setsid "$@" >"$RUN/$name.log" 2>&1 < /dev/null &
  echo $! > "$RUN/$name.pid"
}

# wait_http NAME URL: bounded wait (60 s) for readiness; shows the log tail on failure.
wait_http() {
  local name=$1 url=$2
  for _ in $(seq 1 240); do
    if curl -fsS -o /dev/null "$url" 2>/dev/null; then echo "[stack] $name ready"; return 0; fi
    running "$name" || break
    sleep 0.25
  done
  echo "[stack] $name did not become ready ($url); last log lines:" >&2
  tail -n 30 "$RUN/$name.log" >&2
  return 1
}

for bin in "$CACHE/otelcol/otelcol-otelguard" "$CACHE/jaeger/jaeger" "$CACHE/loki/loki"; do
  [ -x "$bin" ] || { echo "[stack] missing $bin: run make stack-build" >&2; exit 1; }
done

export LOKI_DATA_DIR="$RUN/loki-data"
start loki "$CACHE/loki/loki" -config.file="$ROOT/otel-config/loki.yaml" -config.expand-env=true
start jaeger "$CACHE/jaeger/jaeger" --config "$ROOT/otel-config/jaeger.yaml"

# The Collector's persistent sending queues live with the rest of the run's data.
export OTELGUARD_COLLECTOR_QUEUE_DIR="${OTELGUARD_COLLECTOR_QUEUE_DIR:-$RUN/otelcol-queues}"
# gateway.yaml's hops are TLS with bearer tokens: unless the variables point elsewhere, a local CA,
# a 127.0.0.1/localhost certificate and two tokens, made once in $RUN/tls.
dev_tls() {
  local d="$RUN/tls"
  mkdir -p "$d"
  if [ ! -f "$d/server.crt" ]; then
    local ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
    openssl req -x509 "${ec[@]}" -days 30 -subj "/CN=otelguard local CA" \
      -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null
    openssl req "${ec[@]}" -subj "/CN=otelguard local" -keyout "$d/server.key" -out "$d/server.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' > "$d/ext.cnf"
    openssl x509 -req -in "$d/server.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
      -days 30 -extfile "$d/ext.cnf" -out "$d/server.crt" 2>/dev/null
    for t in agent-token processor-token; do head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$d/$t"; done
  fi
  export OTELGUARD_COLLECTOR_TLS_CERT="${OTELGUARD_COLLECTOR_TLS_CERT:-$d/server.crt}"
  export OTELGUARD_COLLECTOR_TLS_KEY="${OTELGUARD_COLLECTOR_TLS_KEY:-$d/server.key}"
  export OTELGUARD_AGENT_TOKENS_FILE="${OTELGUARD_AGENT_TOKENS_FILE:-$d/agent-token}"
  export OTELGUARD_PROCESSOR_CA_FILE="${OTELGUARD_PROCESSOR_CA_FILE:-$d/ca.crt}"
  export OTELGUARD_PROCESSOR_TOKEN_FILE="${OTELGUARD_PROCESSOR_TOKEN_FILE:-$d/processor-token}"
}

configs=(--config "$ROOT/otel-config/collector/backends.yaml")
if [ "$MODE" = gateway ]; then
  configs+=(--config "$ROOT/otel-config/collector/gateway.yaml")
  dev_tls
fi
start otelcol "$CACHE/otelcol/otelcol-otelguard" "${configs[@]}"

# Prometheus: the checked-in config, with file_sd targets for the Collector's ports.
PROM_PORT="${OTELGUARD_PROMETHEUS_PORT:-9090}"
mkdir -p "$RUN/prometheus/targets"
cp -r "$ROOT/otel-config/prometheus/." "$RUN/prometheus/"
cat > "$RUN/prometheus/targets/otelguard.json" <<JSON
[{"targets": ["127.0.0.1:9464", "127.0.0.1:9465", "127.0.0.1:9466"], "labels": {}}]
JSON
echo "[{\"targets\": [\"${OTELGUARD_COLLECTOR_PROMETHEUS:-127.0.0.1:8889}\"], \"labels\": {}}]" > "$RUN/prometheus/targets/otelcol-exporter.json"
echo "[{\"targets\": [\"127.0.0.1:${OTELGUARD_COLLECTOR_TELEMETRY_PORT:-8888}\"], \"labels\": {}}]" > "$RUN/prometheus/targets/otelcol.json"
start prometheus /usr/bin/prometheus --config.file="$RUN/prometheus/prometheus.yml" \
  --storage.tsdb.path="$RUN/prometheus-data" --web.listen-address="127.0.0.1:${PROM_PORT}" --log.level=warn

if [ "${OTELGUARD_STACK_KUBE:-1}" = 1 ] && [ -f "$ROOT/tests/support/kube.py" ] && [ -x "$CACHE/kubernetes/kube-apiserver" ]; then
  mkdir -p "$RUN/kube"
  PY="$ROOT/.venv/bin/python"; [ -x "$PY" ] || PY=python3
  (cd "$ROOT" && start kube "$PY" -m tests.support.kube "$RUN/kube")
fi

wait_http loki "http://127.0.0.1:${LOKI_HTTP_PORT:-3100}/ready"
wait_http jaeger "http://${JAEGER_QUERY_HTTP:-127.0.0.1:16686}/api/services"
wait_http otelcol "http://${OTELGUARD_COLLECTOR_HEALTH:-127.0.0.1:13133}/"
wait_http prometheus "http://127.0.0.1:${PROM_PORT}/-/ready"
if running kube; then
  for _ in $(seq 1 120); do grep -q kubeconfig "$RUN/kube.log" 2>/dev/null && break; sleep 0.5; done
  echo "[stack] kube-apiserver: $(grep -m1 -o '/[^ ]*kubeconfig[^ ]*' "$RUN/kube.log" || echo "see $RUN/kube.log")"
fi

cat <<TXT
[stack] up ($MODE mode); logs and pids in $RUN
  Collector OTLP      grpc ${OTELGUARD_COLLECTOR_OTLP_GRPC:-127.0.0.1:4317}  http http://${OTELGUARD_COLLECTOR_OTLP_HTTP:-127.0.0.1:4318}$( [ "$MODE" = gateway ] && echo "  agents grpc ${OTELGUARD_COLLECTOR_AGENT_GRPC:-127.0.0.1:4319} -> processor ${OTELGUARD_PROCESSOR_ENDPOINT:-127.0.0.1:4320}")
  Loki                http://127.0.0.1:${LOKI_HTTP_PORT:-3100}   (LogQL: /loki/api/v1/query_range)
  Jaeger UI/API       http://${JAEGER_QUERY_HTTP:-127.0.0.1:16686}
  Prometheus          http://127.0.0.1:${PROM_PORT}   (alerts: /alerts)
  Collector metrics   http://${OTELGUARD_COLLECTOR_PROMETHEUS:-127.0.0.1:8889}/metrics (detections)  http://127.0.0.1:${OTELGUARD_COLLECTOR_TELEMETRY_PORT:-8888}/metrics (self)
$( [ "$MODE" = gateway ] && echo "  TLS and tokens      $RUN/tls: otelguard processor --tls-cert $OTELGUARD_COLLECTOR_TLS_CERT --tls-key $OTELGUARD_COLLECTOR_TLS_KEY --token-file $OTELGUARD_PROCESSOR_TOKEN_FILE --export-ca $OTELGUARD_PROCESSOR_CA_FILE --export-token-file $OTELGUARD_PROCESSOR_TOKEN_FILE; otelguard agent --otlp-ca $OTELGUARD_PROCESSOR_CA_FILE --otlp-token-file $OTELGUARD_AGENT_TOKENS_FILE")
  Stop with: make stack-stop
TXT
