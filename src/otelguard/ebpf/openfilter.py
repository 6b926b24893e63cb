"""The file probe's in-kernel open filter, rendered from the read paths and prefixes.

A read-only open is sent only when its path (as passed, read from user memory at syscall entry)
is one of the read paths (``ProbeConfig.read_paths``: exact names, ``/etc/shadow`` does not
send ``/etc/shadow-``) or starts with a read prefix (``ProbeConfig.read_prefixes``); a relative
path, or one that is not normalised (``//``, ``/./``, ``/../``), passes too and user space
re-checks it after resolving (:func:`read_wanted`). The entries are rendered as a byte trie, so
an unwatched path is rejected at its first byte no entry has (``/tmp/x``: one compare after
``/``; ``/etc/hostname``: five) whatever the number of entries. Before the path is read, the
open's flags decide: with no read entry at all, a read-only open is rejected without reading
user memory (docs/architecture.md#kernel-facts).
"""

from __future__ import annotations

import posixpath

MAX_PREFIXES = 32
MAX_PATHS = 64
MAX_ENTRY_LEN = 64


def c_char(ch: str) -> str:
    """``ch`` as a C character literal."""
    return "'\\''" if ch == "'" else ("'\\\\'" if ch == "\\" else f"'{ch}'")


def check_entries(prefixes: tuple[str, ...], paths: tuple[str, ...]) -> None:
    """Refuse what the kernel program is not built for (ProbeConfig checks the same)."""
    bad = [p for p in prefixes + paths if not p.isascii() or not p.startswith("/") or
           len(p.encode()) > MAX_ENTRY_LEN]
    if bad:
        raise ValueError(f"read paths and prefixes must be absolute ASCII paths of at most "
                         f"{MAX_ENTRY_LEN} bytes: {bad}")
    if len(prefixes) > MAX_PREFIXES:
        raise ValueError(f"at most {MAX_PREFIXES} read prefixes, got {len(prefixes)}")
    if len(paths) > MAX_PATHS:
        raise ValueError(f"at most {MAX_PATHS} read paths, got {len(paths)}")


def render_read_match(prefixes: tuple[str, ...], paths: tuple[str, ...]) -> str:
    """The body of ``og_file_read_match(p)``: returns 1 for a watched path, else 0."""
    check_entries(prefixes, paths)
    entries = {(p, False) for p in paths} | {(p, True) for p in prefixes}
    return "\n".join(_node(sorted(entries), 0, "    "))


def _node(entries: list[tuple[str, bool]], i: int, pad: str) -> list[str]:
    """C for entries that all share their first ``i`` bytes (already compared)."""
    out: list[str] = []
    if any(prefix and len(s) == i for s, prefix in entries):
        return [f"{pad}return 1;  // prefix {next(s for s, p in entries if p and len(s) == i)}"]
    for s, _ in entries:
        if len(s) == i:
            out.append(f"{pad}if (p[{i}] == 0) {{ return 1; }}  // {s}")
    longer = [e for e in entries if len(e[0]) > i]
    by_char: dict[str, list[tuple[str, bool]]] = {}
    for e in longer:
        by_char.setdefault(e[0][i], []).append(e)
    for ch, group in sorted(by_char.items()):
        # the run of bytes every entry of the group shares, compared in one condition
        end = i + 1
        while all(len(s) > end for s, _ in group) and len({s[end] for s, _ in group}) == 1:
            end += 1
        head = group[0][0]
        cond = " && ".join(f"p[{j}] == {c_char(head[j])}" for j in range(i, end))
        out.append(f"{pad}if ({cond}) {{")
        out += _node(group, end, pad + "    ")
        out.append(f"{pad}}}")
    out.append(f"{pad}return 0;")
    return out


def render_defines(reads: bool, dedup_ns: int, dedup_entries: int) -> str:
    """``OG_FILE_READS`` (any read entry), ``OG_FILE_DEDUP_NS`` (0: off) and its LRU size."""
    return "\n".join((f"#define OG_FILE_READS {int(reads)}",
                      f"#define OG_FILE_DEDUP_NS {dedup_ns}ULL" if dedup_ns else
                      "#define OG_FILE_DEDUP_NS 0",
                      f"#define OG_FILE_DEDUP_ENTRIES {dedup_entries}"))


def normalize(path: str) -> str:
    """Lexical normalisation (``.``, ``..``, ``//``) without touching the filesystem: the file
    may not exist (failed opens) or may live in another mount namespace. The form user space
    re-checks a path the kernel passed as not normalised in (and every resolved path's)."""
    if not path:
        return path
    out = posixpath.normpath(path)
    return "/" + out.lstrip("/") if out.startswith("//") else out


def read_wanted(path: str, prefixes: tuple[str, ...], paths: tuple[str, ...]) -> bool:
    """The kernel filter's test on a resolved absolute path (user space's re-check of relative
    and not normalised paths the kernel let through)."""
    return path in paths or any(path.startswith(p) for p in prefixes)
