# Sourced by scripts/stack/stop.sh and scripts/cluster/lib.sh: stop what a pid file names.
# shellcheck shell=bash

# stop_pidfile FILE LABEL SECONDS: SIGTERM to the process group whose leader FILE records (each
# component runs in its own session, setsid), SIGKILL after SECONDS; removes FILE. Prints
# "[LABEL] stopped NAME (pid N)" when it stopped something.
stop_pidfile() {
  local file=$1 label=$2 seconds=$3 name pid
  [ -f "$file" ] || return 0
  name=$(basename "$file" .pid)
  pid=$(cat "$file")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 $((seconds * 4))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$pid" 2>/dev/null && { kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true; }
    echo "[$label] stopped $name (pid $pid)"
  fi
  rm -f "$file"
}
