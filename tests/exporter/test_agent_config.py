"""``otelguard agent`` refuses a bad config before loading anything, listing every problem."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from otelguard.cli import build_parser
from otelguard.agent import main


def test_all_config_problems_reported_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text("sensor:\n  queue_sizee: 5\nexporter:\n  max_batch: 0\n  flush: 1\n")
    args = build_parser().parse_args([
        "agent", "--otlp-endpoint", "nohostport", "--config", str(cfg),
        "--spool-dir", str(tmp_path / "spool"), "--metrics", "127.0.0.1:0"])
    assert main(args) == 2
    err = capsys.readouterr().err
    for problem in ("sensor.queue_sizee", "exporter.max_batch: must be > 0",
                    "exporter.flush: unknown key", "--otlp-endpoint: expected HOST:PORT"):
        assert problem in err, err
    assert not (tmp_path / "spool").exists()  # nothing was started


def test_unusable_spool_dir_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    args = build_parser().parse_args([
        "agent", "--otlp-endpoint", "127.0.0.1:4317", "--otlp-insecure",
        "--spool-dir", str(blocker / "spool"),
        "--metrics", "127.0.0.1:0"])
    assert main(args) == 2
    assert "spool: cannot create" in capsys.readouterr().err


def test_the_config_file_is_read_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from otelguard.config import builder

    reads: list[str] = []
    real = builder.read_yaml_file

    def counting(path: str | Path) -> Any:
        reads.append(str(path))
        return real(path)

    monkeypatch.setattr(builder, "read_yaml_file", counting)
    cfg = tmp_path / "agent.yaml"
    cfg.write_text("sensor:\n  queue_size: 10\nexporter:\n  max_batch: 10\n")
    args = build_parser().parse_args([  # a valid file; the bad endpoint stops the agent
        "agent", "--otlp-endpoint", "nohostport", "--config", str(cfg),
        "--spool-dir", str(tmp_path / "spool"), "--metrics", "127.0.0.1:0"])
    assert main(args) == 2
    assert reads == [str(cfg)]


def test_the_agent_refuses_a_plaintext_hop_not_said_insecure(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args([
        "agent", "--otlp-endpoint", "127.0.0.1:4317", "--spool-dir", str(tmp_path / "spool"),
        "--metrics", "127.0.0.1:0"])
    assert main(args) == 2
    assert ("exporter: no TLS configured: set exporter.tls.ca_file (or exporter.tls.insecure: "
            "true for plaintext)") in capsys.readouterr().err
    assert not (tmp_path / "spool").exists()


@pytest.mark.parametrize("tls, expected", [
    ("{insecure: true}", "WARN exporter.tls: INSECURE: plaintext to the processor"),
    ("{ca_file: /etc/ca.crt, bearer_token_file: /etc/token}",
     "ok exporter.tls: TLS to the processor, bearer token"),
    ("{}", "FAIL exporter.tls: no TLS configured"),
])
def test_doctor_reports_the_agent_hop(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      tls: str, expected: str) -> None:
    from otelguard.agent import doctor_main

    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"exporter:\n  tls: {tls}\n")
    code = doctor_main(build_parser().parse_args(["doctor", "--config", str(cfg)]))
    out = capsys.readouterr().out
    assert expected in out, out
    if expected.startswith("FAIL"):
        assert code == 1


def test_read_rules_widen_the_filter_and_broken_rules_do_not_stop_the_agent(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from otelguard.agent import with_rules_read_filter
    from otelguard.ebpf.probe import ProbeConfig
    from otelguard.ebpf.settings import SensorConfig

    site = tmp_path / "rules"
    site.mkdir()
    (site / "local_rules.yaml").write_text(
        "- rule: Read vault token\n  desc: d\n  condition: open_read and fd.name = /vault/token\n"
        "  output: o\n  priority: WARNING\n")
    base = SensorConfig(read_rules=(str(site),), read_rules_packaged=True,
                        probe=ProbeConfig(read_path_prefixes=("/srv/",)))
    probe = with_rules_read_filter(base).probe
    # the site rule's exact path, the packaged rules' (/etc/shadow...) and the configured prefix
    assert {"/vault/token", "/etc/shadow"} <= set(probe.read_paths)
    assert "/srv/" in probe.read_prefixes and "/etc/pam.d/" in probe.read_prefixes
    # no configured prefixes (the default): exactly what the rules test, no /etc/ at all
    exact = with_rules_read_filter(SensorConfig(read_rules=(str(site),),
                                                read_rules_packaged=True)).probe
    assert "/etc/" not in exact.read_prefixes and "/srv/" not in exact.read_prefixes
    assert set(probe.read_paths) == set(exact.read_paths)
    # open_read is a packaged macro: without the packaged rules the site file does not load,
    # and the agent keeps its configured prefixes (logged) instead of refusing to start
    alone = SensorConfig(read_rules=(str(site),), probe=ProbeConfig(read_path_prefixes=("/srv/",)))
    assert with_rules_read_filter(alone) == alone
    assert "the rules do not load" in caplog.text and "open_read" in caplog.text


def test_doctor_names_the_read_filter_in_force() -> None:
    from otelguard.agent import read_filter_check
    from otelguard.ebpf.probe import ProbeConfig
    from otelguard.ebpf.settings import SensorConfig

    builtin = read_filter_check(SensorConfig())
    assert builtin.status == "WARN" and "/etc/ " in builtin.detail and "1000 ms" in builtin.detail
    rules = read_filter_check(SensorConfig(read_rules_packaged=True))
    assert rules.status == "ok" and rules.detail.startswith("from the rules: 4 read path(s)")
    assert "/etc/shadow" in rules.detail and "/etc/ " not in rules.detail
    off = read_filter_check(SensorConfig(probe=ProbeConfig(read_path_prefixes=(),
                                                           dedup_window_ms=0)))
    assert off.status == "ok" and off.detail.startswith("configured: 0 read path(s)")
    assert "dedup off" in off.detail
