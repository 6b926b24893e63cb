"""Rules on the environment a program was started with (Falco's ``proc.env``), performed for
real: the variables come from the exec's envp in the kernel (only the allowlisted names,
``sensor.probe.env_names``), so a program that exits at once, like ``/bin/true``, still carries
them. Falco's incubating rule on GLIBC_TUNABLES (CVE-2023-4911), its proxy rule on curl/wget,
and a site rule on ``proc.env[LD_PRELOAD]`` (``falco_stage`` of conftest.py), each with a near
miss."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from otelguard import semconv as S
from otelguard.ebpf.sensor import Sensor
from otelguard.processors.detection.processor import FalcoRulesProcessor
from tests.attacks.harness import named_binary, run_attack

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(120)]

TRUE = os.path.realpath(shutil.which("true") or "/bin/true")
PATH = {"PATH": "/usr/bin:/bin"}


def test_ld_preload_exec_carries_it_and_a_site_rule_fires(
        sensor: Sensor, falco_stage: FalcoRulesProcessor) -> None:
    attack = run_attack(sensor, falco_stage, [TRUE],
                        env={**PATH, "LD_PRELOAD": "/nonexistent/og-hook.so"})
    (rec,) = [a for a in attack.records(S.EV_PROCESS_EXEC) if a[S.PROCESS_PID] == attack.pid]
    assert "LD_PRELOAD=/nonexistent/og-hook.so" in rec[S.PROCESS_ENV]
    (hit,) = attack.fired("Program run with a preloaded library")
    assert "preload=/nonexistent/og-hook.so" in hit.body
    assert "env=" in hit.body and "LD_PRELOAD=/nonexistent/og-hook.so " in hit.body
    assert hit.attrs[S.PROCESS_ENV] == rec[S.PROCESS_ENV]  # evidence copied from the trigger


def test_exec_without_ld_preload_is_quiet(sensor: Sensor,
                                          falco_stage: FalcoRulesProcessor) -> None:
    attack = run_attack(sensor, falco_stage, [TRUE], env={**PATH, "LD_PRELOADED": "x"})
    (rec,) = [a for a in attack.records(S.EV_PROCESS_EXEC) if a[S.PROCESS_PID] == attack.pid]
    assert S.PROCESS_ENV not in rec  # LD_PRELOADED is not LD_PRELOAD: never captured
    assert not attack.fired("Program run with a preloaded library")


def test_glibc_tunables(sensor: Sensor, falco_stage: FalcoRulesProcessor) -> None:
    rule = "Potential Local Privilege Escalation via Environment Variables Misuse"
    attack = run_attack(sensor, falco_stage, [TRUE],
                        env={**PATH, "GLIBC_TUNABLES": "glibc.malloc.mxfast=glibc.malloc.mxfast=A"})
    attack.detection(rule, "NOTICE", S.EV_PROCESS_EXEC,
                     body=["Process run with suspect environment variable",
                           "env=GLIBC_TUNABLES=glibc.malloc.mxfast=glibc.malloc.mxfast=A "])
    near = run_attack(sensor, falco_stage, [TRUE], env=PATH)
    assert near.records(S.EV_PROCESS_EXEC) and not near.fired(rule)


def test_curl_with_a_proxy(sensor: Sensor, falco_stage: FalcoRulesProcessor,
                           bindir: Path) -> None:
    rule = "Program run with disallowed http proxy env"
    curl = named_binary(bindir, "curl", TRUE)
    attack = run_attack(sensor, falco_stage, [curl],
                        env={**PATH, "http_proxy": "http://bob:pw-9d1c@10.0.0.1:3128"})
    d = attack.detection(rule, "NOTICE", S.EV_PROCESS_EXEC,
                         body=["env=http_proxy=http://bob:***@10.0.0.1:3128 ", "process=curl"])
    assert "pw-9d1c" not in d.body
    near = run_attack(sensor, falco_stage, [curl], env=PATH)
    assert near.records(S.EV_PROCESS_EXEC) and not near.fired(rule)
