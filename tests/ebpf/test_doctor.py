"""``otelguard doctor`` on this machine (real kernel, real BCC)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from otelguard.ebpf import doctor

pytestmark = pytest.mark.kernel


def test_doctor_checks_on_this_machine(capsys: pytest.CaptureFixture[str]) -> None:
    checks = {c.name: c for c in doctor.run_checks()}
    assert checks["privileges"].status == doctor.OK
    assert checks["btf"].status == doctor.OK
    assert checks["tracefs"].status == doctor.OK
    assert checks["tracepoints[process]"].status == doctor.OK
    assert checks["tracepoints[file]"].status == doctor.OK
    assert checks["bcc"].status == doctor.OK
    assert checks["ringbuf"].status == doctor.OK
    assert checks["cgroup-v2"].status == doctor.OK
    mode = doctor.lockdown_mode(Path("/sys/kernel/security/lockdown").read_text())
    assert f"lockdown={mode}" in checks["lockdown"].detail
    build = os.path.realpath(f"/lib/modules/{os.uname().release}/build")
    headers = checks["kernel-headers"]
    if os.uname().release in build:
        assert headers.status == doctor.OK
    else:
        assert headers.status == doctor.WARN and "fallback" in headers.detail
        assert build in headers.detail
    if not Path("/proc/modules").exists():  # a kernel without loadable modules (this one)
        priv = checks["tracepoints[privilege]"]
        assert priv.status == doctor.WARN and "CONFIG_MODULES" in priv.detail
    else:
        assert checks["tracepoints[privilege]"].status == doctor.OK
    assert doctor.main(argparse.Namespace()) == 0
    out = capsys.readouterr().out
    assert "ok ringbuf:" in out and "all required checks passed" in out
    for line in out.splitlines()[:-2]:
        if line:
            assert line.split(" ", 1)[0] in ("ok", "WARN", "FAIL"), line


def test_lockdown_mode_parsing() -> None:
    assert doctor.lockdown_mode("none [integrity] confidentiality") == "integrity"
    assert doctor.lockdown_mode("[none] integrity confidentiality") == "none"
    assert doctor.lockdown_mode("none integrity [confidentiality]\n") == "confidentiality"


def test_failed_check_line_names_the_fix() -> None:
    c = doctor.Check("tracefs", doctor.FAIL, "missing", "mount it")
    assert c.line() == "FAIL tracefs: missing (fix: mount it)"
    assert doctor.Check("x", doctor.OK, "fine", "unused").line() == "ok x: fine"


def test_doctor_names_an_unreachable_processor() -> None:
    """``--processor`` at an address where nothing listens: one FAIL line naming it."""
    from otelguard.agent import processor_checks
    from tests.support.endpoints import free_port

    url = f"http://127.0.0.1:{free_port()}"
    [check] = processor_checks(url, timeout_s=2.0)
    assert check.status == doctor.FAIL and check.name == "processor"
    assert url + "/readyz" in check.detail and "--processor" in check.fix
