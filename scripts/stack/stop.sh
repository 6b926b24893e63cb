#!/usr/bin/env bash
# Stops what scripts/stack/start.sh started (by the pids it recorded; nothing else), keeps logs.
# OTELGUARD_STACK_CLEAN=1 also deletes the run directory's data (Loki, Prometheus, kube, the
# Collector's queues).
set -euo pipefail
RUN="${OTELGUARD_STACK_RUN:-${OTELGUARD_CACHE:-$HOME/.cache/otelguard}/run}"
[ -d "$RUN" ] || { echo "[stack] nothing to stop"; exit 0; }
for pidfile in "$RUN"/*.pid; do
  [ -e "$pidfile" ] || continue
  name=$(basename "$pidfile" .pid); pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    # Each component runs in its own session (setsid): signal its process group.
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$pid" 2>/dev/null && { kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true; }
    echo "[stack] stopped $name (pid $pid)"
  fi
  rm -f "$pidfile"
done
if [ "${OTELGUARD_STACK_CLEAN:-0}" = 1 ]; then
  rm -rf "$RUN/loki-data" "$RUN/prometheus-data" "$RUN/kube" "$RUN/otelcol-queues" && echo "[stack] data removed"
fi
