"""Program images without the kernel: map references rewritten both ways, the file format's
checks, BCC's type descriptions rebuilt as ctypes types."""

from __future__ import annotations

import ctypes
import struct
from pathlib import Path

import pytest

from otelguard.ebpf import progcache
from otelguard.ebpf.progcache import FunctionSpec, MapSpec, ProgramCache, ProgramImage
from otelguard.ebpf.tables import TypeDescError, parse_desc


def _insn(code: int, regs: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, regs, 0, imm)


# ld_imm64 r1 = map fd 7 (two slots); ld_imm64 r2 = 42 (a constant); ld_imm64 r1 = map fd 9; exit
PROGRAM = (_insn(0x18, 0x11, 7) + _insn(0) + _insn(0x18, 0x02, 42) + _insn(0)
           + _insn(0x18, 0x11, 9) + _insn(0) + _insn(0x95))


def test_map_references_are_found_and_rewritten() -> None:
    assert progcache.map_refs(PROGRAM) == [0, 4]
    indexed = progcache.rewrite_maps(PROGRAM, {7: 0, 9: 1}.__getitem__)
    imms = [struct.unpack_from("<i", indexed, i * 8 + 4)[0] for i in range(7)]
    assert imms == [0, 0, 42, 0, 1, 0, 0]  # the constant is untouched
    assert progcache.rewrite_maps(indexed, [7, 9].__getitem__) == PROGRAM


def test_function_tracepoint_names() -> None:
    assert progcache.function_tracepoint("tracepoint__syscalls__sys_enter_openat") == (
        "syscalls", "sys_enter_openat")
    assert progcache.function_tracepoint("kprobe__do_sys_open") is None


IMAGE = ProgramImage("GPL", 0, (MapSpec("og_drops", 6, 4, 8, 1, 0, '"int"',
                                        '"unsigned long long"'),),
                     (FunctionSpec("tracepoint__a__b", "a", "b", PROGRAM),),
                     probes=("file",), failed={"network": "verifier said no"})


def test_image_round_trip_and_damage(tmp_path: Path) -> None:
    cache = ProgramCache(tmp_path)
    path = cache.put("k", IMAGE)
    assert cache.get("k") == IMAGE and cache.get("other") is None
    path.write_bytes(path.read_bytes().replace(b"GPL", b"BSD"))  # checksum no longer matches
    with pytest.raises(ValueError, match="corrupt: checksum"):
        cache.get("k")
    path.write_bytes(b"{not json")
    with pytest.raises(ValueError, match="corrupt"):
        cache.get("k")


def test_cache_keeps_the_most_recent(tmp_path: Path) -> None:
    import os

    cache = ProgramCache(tmp_path, keep=2)
    for i, key in enumerate(("a", "b", "c")):
        path = cache.put(key, IMAGE)
        os.utime(path, (1000 + i, 1000 + i))
    cache.put("d", IMAGE)
    assert sorted(p.name.split(".")[0] for p in cache.entries()) == ["c", "d"]


def test_key_depends_on_text_and_flags() -> None:
    k = progcache.cache_key("int x;", ("-O2",))
    assert k == progcache.cache_key("int x;", ("-O2",))
    assert k != progcache.cache_key("int y;", ("-O2",))
    assert k != progcache.cache_key("int x;", ("-O3",))


def test_bcc_descriptions_become_ctypes() -> None:
    budget = parse_desc('["og_budget", [["tat","unsigned long long", [4]], '
                        '["dropped","unsigned long long"], ["dropped_high","unsigned long long"]'
                        '], "struct_packed"]')
    assert ctypes.sizeof(budget) == 48 and budget.dropped.offset == 32
    hdr = parse_desc('["h", [["a","unsigned char"], ["b","unsigned int"], ["c","char", [3]]'
                     '], "struct"]')
    assert hdr.b.offset == 4 and hdr.c.offset == 8 and ctypes.sizeof(hdr) == 12
    bits = parse_desc('["b", [["f","unsigned int", 3], ["g","unsigned int", 5]], "struct"]')
    assert ctypes.sizeof(bits) == 4
    assert parse_desc('"int"') is ctypes.c_int
    with pytest.raises(TypeDescError):
        parse_desc('"float128"')
    with pytest.raises(TypeDescError):
        parse_desc("[1, 2")
