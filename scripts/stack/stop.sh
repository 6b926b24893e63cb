#!/usr/bin/env bash
# Stops what scripts/stack/start.sh started (by the pids it recorded; nothing else), keeps logs.
# OTELGUARD_STACK_CLEAN=1 also deletes the run directory's data (Loki, Prometheus, kube, the
# Collector's queues).
set -euo pipefail
RUN="${OTELGUARD_STACK_RUN:-${OTELGUARD_CACHE:-$HOME/.cache/otelguard}/run}"
[ -d "$RUN" ] || { echo "[stack] nothing to stop"; exit 0; }
# shellcheck disable=SC1091
source "$(cd "$(dirname "$0")" && pwd)/pidfile.sh"
for pidfile in "$RUN"/*.pid; do
  [ -e "$pidfile" ] || continue
  stop_pidfile "$pidfile" stack 10
done
if [ "${OTELGUARD_STACK_CLEAN:-0}" = 1 ]; then
  rm -rf "$RUN/loki-data" "$RUN/prometheus-data" "$RUN/kube" "$RUN/otelcol-queues" && echo "[stack] data removed"
fi
