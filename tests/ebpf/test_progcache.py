"""The program cache on the real kernel: a warm start loads without the compiler and events flow;
a changed program misses; a corrupt or refused entry falls back to compiling and is rewritten."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import pytest

from otelguard import telemetry
from otelguard.ebpf import doctor
from otelguard.ebpf.file import create as create_file_probe
from otelguard.ebpf.loader import load, program_key
from otelguard.ebpf.probe import ProbeConfig
from otelguard.ebpf.progcache import ProgramCache
from otelguard.ebpf.settings import SensorConfig
from tests.support.prerequisites import require_root

pytestmark = pytest.mark.kernel

FILE_PROBE = create_file_probe()
ROOT = Path(__file__).resolve().parents[2]

# A fresh interpreter (nothing imported yet) starts a process-probe sensor on the given cache,
# execs a marker command until its exec event arrives, and reports how it loaded.
START = """
import json, subprocess, sys, time
from otelguard import semconv
from otelguard.ebpf.sensor import Sensor
from otelguard.ebpf.settings import SensorConfig
cache, marker = sys.argv[1], sys.argv[2]
sensor = Sensor(SensorConfig(probes=("process",), program_cache_dir=cache))
started = time.monotonic()
status = sensor.start()
seen, deadline = False, time.monotonic() + 30
while not seen and time.monotonic() < deadline:
    subprocess.run(["/bin/sh", "-c", "exec /bin/echo " + marker], stdout=subprocess.DEVNULL)
    for ev in sensor.drain(100000, 0.2):
        line = str(ev.attrs.get(semconv.PROCESS_COMMAND_LINE, ""))
        seen = seen or (ev.name == semconv.EV_PROCESS_EXEC and marker in line)
maps = open("/proc/self/maps").read()
print(json.dumps({"origin": status.program_origin, "bcc_imported": "bcc" in sys.modules,
                  "llvm_mapped": "libLLVM" in maps or "libclang" in maps, "seen": seen,
                  "loaded": status.loaded, "start_s": time.monotonic() - started}))
sensor.stop()
"""


def _start(cache: Path) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=f"{ROOT / 'src'}:{ROOT}")
    out = subprocess.run([sys.executable, "-c", START, str(cache), f"og-{uuid.uuid4().hex}"],
                         env=env, capture_output=True, text=True, timeout=300, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any]]]:
    require_root()
    cache = tmp_path_factory.mktemp("progcache")
    cold = _start(cache)
    yield cache, cold


def test_cold_start_compiles_and_stores(warm_cache: tuple[Path, dict[str, Any]]) -> None:
    cache, cold = warm_cache
    assert cold["origin"] == "compiled" and cold["bcc_imported"] and cold["seen"]
    assert len(ProgramCache(cache).entries()) == 1


def test_warm_start_loads_without_the_compiler(warm_cache: tuple[Path, dict[str, Any]]) -> None:
    cache, _ = warm_cache
    warm = _start(cache)
    assert warm["origin"] == "cache"
    assert not warm["bcc_imported"], "BCC's Python was imported on the warm path"
    assert not warm["llvm_mapped"], "LLVM/clang was mapped on the warm path"
    assert warm["seen"], "no exec event from the cached program"
    assert warm["loaded"] == ["process"]


def _count(result: str) -> float:
    return telemetry.counter_values(telemetry.program_cache).get((result,), 0.0)


def test_changed_program_text_misses(tmp_path: Path) -> None:
    require_root()
    cache = ProgramCache(tmp_path)
    cfg = ProbeConfig(self_tgid=os.getpid())
    first = load([FILE_PROBE], cfg, cache=cache)  # type: ignore[list-item]
    first.close()
    again = load([FILE_PROBE], cfg, cache=cache)  # type: ignore[list-item]
    again.close()
    other = load([FILE_PROBE], replace(cfg, read_path_prefixes=("/srv/",)),  # type: ignore[list-item]
                 cache=cache)
    other.close()
    assert (first.origin, again.origin, other.origin) == ("compiled", "cache", "compiled")
    assert again.cache_path == first.cache_path != other.cache_path
    assert len(cache.entries()) == 2


def test_each_function_load_is_timed_and_logged(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    require_root()
    cache = ProgramCache(tmp_path)
    cfg = ProbeConfig(self_tgid=os.getpid())
    with caplog.at_level(logging.DEBUG, logger="otelguard.ebpf.loader"):
        prog = load([FILE_PROBE], cfg, cache=cache)  # type: ignore[list-item]
        names = set(prog.program_fds)
        prog.close()
    loads = prog.program_loads
    assert set(loads) == names and names
    for name, one in loads.items():
        assert one.seconds > 0 and one.verified_insns > 0 and one.insns > 0, (name, one)
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("BPF_PROG_LOAD")]
    assert len(logged) == len(names)
    slowest = max(loads, key=lambda n: loads[n].seconds)
    assert logged[0].startswith(f"BPF_PROG_LOAD {slowest}: ")
    assert f"{loads[slowest].verified_insns} instructions verified" in logged[0]


def _corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 16] = b"A" * 16  # still JSON-ish text, but no longer what was written
    path.write_bytes(bytes(data))


def _refused(cache: ProgramCache, key: str) -> None:
    """A well-formed entry (valid checksum) whose first function the verifier refuses."""
    image = cache.get(key)
    assert image is not None
    bad = replace(image.functions[0], insns=bytes([0x95]) + bytes(7))  # exit, r0 never set
    cache.put(key, replace(image, functions=(bad, *image.functions[1:])))


@pytest.mark.parametrize("damage", ["corrupt", "refused"])
def test_bad_entry_falls_back_and_is_rewritten(tmp_path: Path, damage: str) -> None:
    require_root()
    cache = ProgramCache(tmp_path)
    cfg = ProbeConfig(self_tgid=os.getpid())
    load([FILE_PROBE], cfg, cache=cache).close()  # type: ignore[list-item]
    (path,) = cache.entries()
    key = path.name.split(".", 1)[0]
    if damage == "corrupt":
        _corrupt(path)
    else:
        _refused(cache, key)
    before = _count("fallback")
    prog = load([FILE_PROBE], cfg, cache=cache)  # type: ignore[list-item]
    try:
        assert prog.origin == "compiled" and prog.failed == {}
        assert _count("fallback") == before + 1
        assert prog.kernel_drops() == 0  # the tables of the recompiled program work
    finally:
        prog.close()
    assert cache.get(key) is not None  # rewritten, and whole again
    hit = load([FILE_PROBE], cfg, cache=cache)  # type: ignore[list-item]
    hit.close()
    assert hit.origin == "cache"


def test_doctor_reports_hit_and_miss(warm_cache: tuple[Path, dict[str, Any]],
                                     tmp_path: Path) -> None:
    cache, _ = warm_cache
    cfg = SensorConfig(probes=("process",), program_cache_dir=str(cache))
    check = doctor.check_program_cache(cfg)
    assert check.status == doctor.OK and check.detail.startswith("hit:")
    assert program_key(cfg)[:16] in check.detail and str(cache) in check.detail
    empty = doctor.check_program_cache(replace(cfg, program_cache_dir=str(tmp_path)))
    assert empty.status == doctor.OK and empty.detail.startswith("miss:")
    off = doctor.check_program_cache(replace(cfg, program_cache=False))
    assert off.status == doctor.WARN
