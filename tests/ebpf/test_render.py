"""Rendering probe C from config (pure) and the ``otelguard ebpf render`` command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

from otelguard.ebpf import loader
from otelguard.ebpf.file import create as create_file_probe
from otelguard.ebpf.openfilter import read_wanted, render_read_match
from otelguard.config import InvalidFields
from otelguard.ebpf.probe import ProbeConfig
from otelguard.ebpf.process import create as create_process_probe

FILE = create_file_probe()
PROCESS = create_process_probe()

ALL_PROCESS = frozenset(PROCESS.tracepoints())
ALL_FILE = frozenset(FILE.tracepoints())


def test_process_render_fills_placeholders() -> None:
    text = PROCESS.render(ProbeConfig(argv_max=7, arg_len=64), ALL_PROCESS - {
        "syscalls:sys_enter_execveat", "syscalls:sys_exit_execveat"})
    assert "#define OG_ARGV_MAX 7" in text and "#define OG_ARG_LEN 64" in text
    assert "#define OG_TP_sys_enter_execve 1" in text
    assert "#define OG_TP_sys_enter_execveat 0" in text  # compiled out, not a load failure
    with pytest.raises(ValueError, match="argv_max: must be 1..64"):
        ProbeConfig(argv_max=0)
    unchecked = ProbeConfig()
    object.__setattr__(unchecked, "argv_max", 0)  # render() refuses what skipped the checks
    with pytest.raises(ValueError, match="argv_max must be 1..64"):
        PROCESS.render(unchecked, ALL_PROCESS)


def test_process_render_env_allowlist() -> None:
    text = PROCESS.render(ProbeConfig(env_names=("LD_PRELOAD", "A_1"), env_max=3, env_len=128),
                          ALL_PROCESS)
    assert "#define OG_ENV_MAX 3" in text and "#define OG_ENV_LEN 128" in text
    assert "#define OG_ENV_HEAD 16" in text  # LD_PRELOAD + '=' + NUL, rounded up to 8
    assert sys.byteorder == "little"  # x86_64 and aarch64, the hosts bpfsys supports
    # 8 bytes at a time (little-endian words): letters without case (0x20 or'ed in), other
    # bytes exact, then '='; bytes past the '=' masked off. "ld_prelo" = 6c 64 5f 70 72 65 6c 6f
    # (the '_' at byte 2 gets no 0x20), then "ad=" = 61 64 3d.
    assert ("(h[0] | 0x2020202020002020ULL) == 0x6f6c6572705f646cULL && "
            "((h[1] & 0xffffffULL) | 0x2020ULL) == 0x3d6461ULL" in text)
    assert "((h[0] & 0xffffffffULL) | 0x20ULL) == 0x3d315f61ULL" in text  # "a_1="
    off = PROCESS.render(ProbeConfig(env_names=()), ALL_PROCESS)
    assert "#define OG_ENV_MAX 0" in off and "static __always_inline int og_env_wanted" not in off
    with pytest.raises(InvalidFields, match="env_names"):
        ProbeConfig(env_names=("LD PRELOAD",))
    with pytest.raises(InvalidFields, match="env_names"):
        ProbeConfig(env_names=("X" * 31,))


def test_file_render_prefixes_and_missing_tracepoints() -> None:
    text = FILE.render(ProbeConfig(read_path_prefixes=("/etc/", "/x")),
                       ALL_FILE - {"syscalls:sys_exit_openat2"})
    assert "OG_FILE_READ_MATCH\n" not in text and "\nOG_FILE_HANDLERS" not in text
    assert "if (p[1] == 'e' && p[2] == 't' && p[3] == 'c' && p[4] == '/') {" in text
    assert "if (p[1] == 'x') {" in text and "return 1;  // prefix /x" in text
    assert "TRACEPOINT_PROBE(syscalls, sys_enter_openat)" in text
    assert "TRACEPOINT_PROBE(syscalls, sys_enter_openat2)" not in text
    assert "// openat2: tracepoint missing, not traced" in text
    # the syscall pairs plus the exec tracepoint dedup forgets a process's entries at
    assert text.count("TRACEPOINT_PROBE(") == 2 * (len(ALL_FILE) // 2 - 1) + 1
    assert "#define OG_FILE_READS 1" in text and "#define OG_FILE_DEDUP_NS 1000000000ULL" in text
    # flags first: openat decides on its flags before the scratch record or any user memory
    openat = text[text.index("sys_enter_openat)"):]
    assert openat.index("og_file_flags_wanted") < openat.index("og_file_begin") < \
        openat.index("bpf_probe_read_user_str")


def test_file_render_without_reads_or_dedup() -> None:
    off = FILE.render(ProbeConfig(read_path_prefixes=(), dedup_window_ms=0), ALL_FILE)
    assert "#define OG_FILE_READS 0" in off and "#define OG_FILE_DEDUP_NS 0" in off
    # dedup needs the exec tracepoint: without it, every open is sent
    no_exec = FILE.render(ProbeConfig(), ALL_FILE - {"sched:sched_process_exec"})
    assert "#define OG_FILE_DEDUP_NS 0" in no_exec
    assert "DEFAULT" not in off and "/etc/" in FILE.render(ProbeConfig(), ALL_FILE)


def test_read_match_is_a_trie_of_exact_names_and_prefixes() -> None:
    body = render_read_match(("/etc/pam.d/",), ("/etc/shadow", "/etc/sudoers", "/etc/shadow.x"))
    # one compare of the shared head, then the branches; an exact name ends in a NUL test
    assert body.count("p[1] == 'e' && p[2] == 't' && p[3] == 'c' && p[4] == '/'") == 1
    assert "if (p[11] == 0) { return 1; }  // /etc/shadow" in body
    assert "if (p[13] == 0) { return 1; }  // /etc/shadow.x" in body
    assert "return 1;  // prefix /etc/pam.d/" in body
    assert "return 0;" in render_read_match((), ())
    for bad in ((("etc/",), ()), (("/é/",), ()), ((), ("/" + "a" * 64,)),
                (tuple(f"/{i}" for i in range(33)), ()), ((), tuple(f"/{i}" for i in range(65)))):
        with pytest.raises(ValueError):
            render_read_match(*bad)
    assert read_wanted("/etc/shadow", (), ("/etc/shadow",))
    assert not read_wanted("/etc/shadow-", (), ("/etc/shadow",))
    assert read_wanted("/etc/pam.d/x", ("/etc/pam.d/",), ())


def test_program_has_common_placeholders() -> None:
    text = loader.render_program([PROCESS, FILE], ProbeConfig(ringbuf_pages=8, self_tgid=4242),
                                 ALL_PROCESS | ALL_FILE)
    assert "#define OG_RINGBUF_PAGES 8" in text
    # the agent's pid is written to og_self at load, never rendered: the text (the program
    # cache's key) is the same for every start with the same config
    assert "4242" not in text and "BPF_ARRAY(og_self, u32, 1)" in text
    assert text == loader.render_program([PROCESS, FILE],
                                         ProbeConfig(ringbuf_pages=8, self_tgid=7),
                                         ALL_PROCESS | ALL_FILE)
    assert text.index("struct og_hdr {") < text.index("probe: process") < text.index("probe: file")


def test_render_main(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert loader.render_main(argparse.Namespace(probe="file", config=None)) == 0
    out = capsys.readouterr().out
    assert "TRACEPOINT_PROBE(syscalls, sys_enter_openat)" in out and "struct og_hdr {" not in out
    cfg = tmp_path / "c.yaml"
    cfg.write_text("sensor:\n  probes: [process]\n  probe:\n    ringbuf_pages: 16\n")
    assert loader.render_main(argparse.Namespace(probe="all", config=str(cfg))) == 0
    out = capsys.readouterr().out
    assert "#define OG_RINGBUF_PAGES 16" in out and "probe: process" in out
    assert "probe: file" not in out
    cfg.write_text("sensor:\n  probe:\n    ringbuf_pagez: 16\n")
    assert loader.render_main(argparse.Namespace(probe="all", config=str(cfg))) == 2
    assert "sensor.probe.ringbuf_pagez: unknown key" in capsys.readouterr().err
    assert loader.render_main(argparse.Namespace(probe="nosuch", config=None)) == 2
