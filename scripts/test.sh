#!/usr/bin/env bash
# `make test`: every phase timed, and one summary line per phase printed at the end (also when a
# phase fails), so the cold and warm costs of the suite stay visible in every CI log.
# Phases: setup (Debian packages, venv), stack builds (Go parts, cached), images (OCI archives for
# tests/e2e/test_images.py, cached by content; skipped when PYTEST_ARGS deselects e2e), mypy,
# pytest.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PY=.venv/bin/python
names=()
secs=()
results=()
summary() {
  local total=0
  echo
  echo "[make test] timing summary"
  for i in "${!names[@]}"; do
    printf '[make test]   %-12s %6ss  %s\n' "${names[$i]}" "${secs[$i]}" "${results[$i]}"
    total=$((total + secs[$i]))
  done
  printf '[make test]   %-12s %6ss\n' "total" "$total"
}
phase() {
  local name=$1
  shift
  local start=$SECONDS
  "$@"
  local rc=$?
  names+=("$name")
  secs+=($((SECONDS - start)))
  if ((rc == 0)); then results+=("ok"); else results+=("FAILED (exit $rc)"); fi
  if ((rc != 0)); then summary; exit "$rc"; fi
}
phase setup bash scripts/setup.sh
phase stack-build bash scripts/stack/build.sh all
if [[ "${PYTEST_ARGS:-}" != *"not e2e"* ]]; then
  phase images bash scripts/images/build.sh all
fi
phase mypy "$PY" -m mypy
# pytest in two groups, each with its own timing line: everything but the real one-node cluster,
# then the cluster group (tests marked `cluster`: scripts/cluster/up.sh starts the node once, or
# the tests attach to a running `make cluster`). PYTEST_ARGS given: one run with exactly those.
# pytest's closing lines scroll above the summary, so their counts are repeated as the last line.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
rc=0
run_pytest() {
  local name=$1 start=$SECONDS r
  shift
  "$PY" -m pytest "$@" 2>&1 | tee -a "$log"
  r=${PIPESTATUS[0]}
  names+=("$name")
  secs+=($((SECONDS - start)))
  if ((r == 0)); then results+=("ok"); else results+=("FAILED (exit $r)"); rc=$r; fi
}
if [ -n "${PYTEST_ARGS:-}" ]; then
  # shellcheck disable=SC2086
  run_pytest pytest ${PYTEST_ARGS}
else
  run_pytest pytest -m "not cluster"
  run_pytest pytest-cluster -m cluster
fi
summary
# one closing line per run; each count summed over the runs
count() { grep -E '[0-9]+ (passed|failed|errors?|skipped|deselected).* in [0-9.]+s' "$log" \
  | grep -Eo "[0-9]+ $1" | awk '{s += $1} END {print s + 0}'; }
failed=$(( $(count failed) + $(count 'errors?') ))
echo "pytest: $(count passed) passed, $failed failed, $(count skipped) skipped"
exit "$rc"
