"""glob/iglob against the C library's fnmatch(3) (what Falco calls, through ctypes), and pmatch
against libs' path prefix search semantics. The operators inside rules:
test_falco_semantics.py."""

from __future__ import annotations

import ctypes
import ctypes.util
import itertools

import pytest

from otelguard.processors.detection.patterns import glob_matcher, path_prefix_matcher

_LIBC = ctypes.CDLL(ctypes.util.find_library("c"))
_LIBC.fnmatch.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int]
FNM_CASEFOLD = 1 << 4  # glibc <fnmatch.h>


def _libc(pattern: str, value: str, casefold: bool = False) -> bool:
    return bool(_LIBC.fnmatch(pattern.encode(), value.encode(),
                              FNM_CASEFOLD if casefold else 0) == 0)


PATTERNS = [
    "[^b]ash", "[!b]ash", "[b]ash", "\\*", "\\*ash", "ba\\sh", "ba\\", "[]a]sh", "[!]a]sh",
    "[a-c]ash", "[c-a]ash", "[a-]sh", "[-a]sh", "*", "?ash", "b*", "*sh", "[[:alpha:]]ash",
    "[[:digit:]]*", "[[:upper:]]ASH", "[[:nope:]]ash", "[", "[ab", "b[", "[\\]]x", "[a\\-c]ash",
    "/usr/*/ba?h", "*/.ssh/*", "**", "b**h", "[.]x", ".*", "[[=b=]]ash", "[[.b.]]ash",
]
VALUES = ["bash", "cash", "*", "*ash", "bash\\", "ba\\", "]ash", "]sh", "ash", "-sh", "a-sh",
          "Bash", "BASH", "1x", "/usr/bin/bash", "/home/u/.ssh/id", "[", "[ab", "b[", "]x",
          "-ash", ".x", ".hidden", "bsh", "b/h", "\\x"]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_glob_is_fnmatch3(pattern: str) -> None:
    for casefold in (False, True):
        ours = glob_matcher(pattern, casefold)
        diff = [v for v in VALUES if ours(v) != _libc(pattern, v, casefold)]
        assert not diff, (pattern, casefold, diff)


def test_random_patterns_agree_with_libc() -> None:
    alphabet = "ab*?[]!^\\-/"
    for n in (1, 2, 3, 4):
        for chars in itertools.islice(itertools.product(alphabet, repeat=n), 3000):
            pattern = "".join(chars)
            m = glob_matcher(pattern)
            for v in ("a", "b", "ab", "a/b", "*", "[", "]", "!", "^", "\\", "-", "", "aa"):
                assert m(v) == _libc(pattern, v), (pattern, v)


@pytest.mark.parametrize("paths,value,expected", [
    (["/var/*/secrets"], "/var/run/secrets/token", True),
    (["/var/*/secrets"], "/var/run/secret/token", False),
    (["/var/run"], "/var//run/docker.sock", True),
    (["/var/run/"], "/var/run", True),
    (["/var/run"], "/var", False),
    (["/var/run"], "/var/runner", False),
    (["/etc", "/usr/lib"], "/usr/lib/x", True),
    (["/"], "/anything/at/all", True),
    (["/home/*/.ssh"], "/home/alice/.ssh/id_rsa", True),
    (["/home/[ab]*"], "/home/carol/x", False),
    (["/home/[!c]*"], "/home/alice/x", True),
])
def test_pmatch_is_path_prefix_search(paths: list[str], value: str, expected: bool) -> None:
    assert path_prefix_matcher(paths)(value) is expected
