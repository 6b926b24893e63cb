"""Fixtures for the attack tests: the session Sensor (BCC compiles once) with the kernel read
filter derived from every rule set these tests run, as ``otelguard run`` derives it (so each
detection proves it still fires under the exact filter, not a broad ``/etc/`` prefix), one
detection stage built like the product's (rules compile once), and one running Falco's own rule
files (stable, then incubating and sandbox on top) with a site's local rules."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from otelguard.ebpf.probe import ProbeConfig
from otelguard.ebpf.sensor import Sensor
from otelguard.ebpf.settings import SensorConfig
from otelguard.processors.detection.engine import DEFAULT_RULE_FILES, RULES_DIR
from otelguard.processors.detection.processor import Config, FalcoRulesProcessor, create
from otelguard.processors.detection.readfilter import bound_filter, rules_read_filter
from tests.attacks.harness import detection_stage, same_fs_dir, PYTHON
from tests.support.prerequisites import require_root
from tests.support.sensor import SCOPE, scope_dirs

FALCO_RULES = tuple(str(RULES_DIR / f) for f in (
    "falco_rules.yaml", "falco-incubating_rules.yaml", "falco-sandbox_rules.yaml"))


def attack_read_filter() -> ProbeConfig:
    """The read paths and prefixes the packaged rules and Falco's three rule files need."""
    prefixes: list[str] = []
    paths: list[str] = []
    for files in ([str(p) for p in DEFAULT_RULE_FILES], FALCO_RULES):
        rf = rules_read_filter(files)
        prefixes += rf.prefixes
        paths += rf.paths
    kept, exact = bound_filter(prefixes, paths)
    return ProbeConfig(read_path_prefixes=kept, read_paths=exact)


@pytest.fixture(scope="package")  # unloaded when the package ends: later tests run on one
def sensor() -> Iterator[Sensor]:
    require_root()
    scope_dirs()
    s = Sensor(SensorConfig(cgroup_scope=SCOPE, probe=attack_read_filter()))
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="package")
def stage() -> FalcoRulesProcessor:
    return detection_stage()


@pytest.fixture
def bindir() -> Iterator[Path]:
    """A scratch directory on the filesystem of the Python binary (for hard-linked names)."""
    yield from same_fs_dir(PYTHON)


# As a site would use the template rule: only the allowed image may start; a container whose
# image is not known to be allowed (here: none, no Kubernetes context) is reported. And a site
# rule on one environment variable (proc.env[NAME]).
LOCAL_RULES = """
- macro: allowed_containers
  condition: (container.image.repository in (registry.example/allowed))
  override:
    condition: replace

- rule: Program run with a preloaded library
  desc: a site rule on proc.env[NAME]
  condition: spawned_process and proc.env[LD_PRELOAD] != ""
  output: Preloaded library | preload=%proc.env[LD_PRELOAD] env=%proc.env process=%proc.name
  priority: WARNING
  tags: [site]
"""


@pytest.fixture(scope="session")
def falco_stage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FalcoRulesProcessor]:
    local = tmp_path_factory.mktemp("rules") / "local_rules.yaml"
    local.write_text(LOCAL_RULES)
    stage = create(Config(rules=FALCO_RULES, local_rules=(str(local),)))
    stage.start()
    yield stage
    stage.shutdown()
