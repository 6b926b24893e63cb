# The two front-door commands: `make run` and `make test`. Both start with `make setup`.
SHELL := /bin/bash
VENV := .venv
OG := $(VENV)/bin/otelguard
PY := $(VENV)/bin/python
RUN_ARGS ?=

.PHONY: setup run test test-fast stack stack-build stack-stop images cluster cluster-stop bench lint

setup:
	@bash scripts/setup.sh

run: setup
	$(OG) run $(RUN_ARGS)

# Whole suite: unit, real-kernel (root) and end-to-end against the Go-built stack; ends with
# one timing line per phase (setup, stack builds, mypy, pytest).
test:
	@PYTEST_ARGS="$(PYTEST_ARGS)" bash scripts/test.sh

# Without the Go-built stack: unit and real-kernel tests only.
test-fast: setup
	$(PY) -m pytest -m "not e2e" $(PYTEST_ARGS)

stack-build: setup
	@bash scripts/stack/build.sh all

stack: stack-build
	@bash scripts/stack/start.sh

stack-stop:
	@bash scripts/stack/stop.sh

# Container images (agent, processor, Collector) as OCI archives under
# $$OTELGUARD_CACHE/images (default ~/.cache/otelguard/images); no registry needed.
images: stack-build
	@bash scripts/images/build.sh all

# A real one-node Kubernetes cluster on this host (docs/stack.md#real-one-node-cluster); prints
# its KUBECONFIG. State in $$OTELGUARD_CLUSTER_DIR (default /var/lib/otelguard-cluster).
cluster: setup
	@bash scripts/stack/build.sh kubernetes coredns
	@bash scripts/cluster/up.sh

cluster-stop:
	@bash scripts/cluster/down.sh

bench: setup
	$(PY) -m bench.run_all $(BENCH_ARGS)
