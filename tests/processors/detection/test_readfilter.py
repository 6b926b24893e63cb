"""The kernel read filter derived from rules (processors/detection/readfilter.py): exact names
stay exact, directories become prefixes, write-only rules need no read, bounds only widen."""

from __future__ import annotations

from pathlib import Path

from otelguard.processors.detection.engine import DEFAULT_RULE_FILES
from otelguard.processors.detection.loader import load_rules
from otelguard.processors.detection.readfilter import (
    MAX_PATHS, MAX_PREFIXES, ReadFilter, bound_filter, read_filter,
)

MACROS = """
- macro: open_read
  condition: (evt.type in (open,openat,openat2) and evt.is_open_read=true and fd.num>=0)
- macro: open_write
  condition: (evt.type in (open,openat,openat2) and evt.is_open_write=true and fd.num>=0)
"""


def _filter(tmp_path: Path, rules: str) -> ReadFilter:
    f = tmp_path / "r.yaml"
    f.write_text(MACROS + rules)
    rs = load_rules([f])
    rs.raise_if_errors()
    return read_filter(rs.rules)


def rule(name: str, cond: str) -> str:
    return f"- rule: {name}\n  desc: d\n  condition: {cond}\n  output: o\n  priority: WARNING\n"


def test_exact_names_directories_and_write_only(tmp_path: Path) -> None:
    rf = _filter(tmp_path, rule("names", "open_read and fd.name in (/etc/shadow, /etc/sudoers)")
                 + rule("dir", "open_read and fd.directory in (/etc/pam.d, /etc/sudoers.d)")
                 + rule("head", "open_read and fd.name startswith /root/.ssh")
                 + rule("writes", "open_write and fd.name startswith /etc")
                 + rule("loose", "open_read and fd.name contains id_rsa"))
    assert rf.paths == ("/etc/shadow", "/etc/sudoers")
    assert rf.prefixes == ("/etc/pam.d/", "/etc/sudoers.d/", "/root/.ssh")
    assert rf.unbounded == ("loose",)
    assert "writes" not in dict(rf.by_rule)  # a write-only rule needs no read
    lines = rf.lines()
    assert lines[0] == "read filter: 2 kernel read path(s): /etc/shadow /etc/sudoers"
    assert "UNBOUNDED loose" in lines[-1]


def test_packaged_rules_need_names_not_etc(tmp_path: Path) -> None:
    rs = load_rules([str(p) for p in DEFAULT_RULE_FILES])
    rf = read_filter(rs.rules)
    assert "/etc/shadow" in rf.paths and "/etc/" not in rf.prefixes
    assert not any("/etc/hostname".startswith(p) for p in rf.prefixes)
    assert "/etc/hostname" not in rf.paths


def test_bounds_only_widen() -> None:
    prefixes, paths = bound_filter(["/etc/pam.d/"], ["/etc/pam.d/x", "/etc/shadow",
                                                     "/srv/" + "a" * 70])
    assert paths == ("/etc/shadow",)  # /etc/pam.d/x is covered by a prefix: dropped
    assert prefixes == ("/etc/pam.d/", "/srv/")  # too long: its directory's prefix
    many = [f"/d{i:03d}/f" for i in range(MAX_PATHS + 5)]
    prefixes, paths = bound_filter([], many)
    assert len(paths) <= MAX_PATHS and len(prefixes) <= MAX_PREFIXES
    assert all(any(p == q or p.startswith(r) for q in paths for r in prefixes + (q,))
               for p in many)
