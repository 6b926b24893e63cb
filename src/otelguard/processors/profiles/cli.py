"""``otelguard profile list DIR | show FILE | diff OLD NEW | approve FILE [--by NAME] |
export DIR OUT | import FILE... --into DIR``: review profiles as code (docs/profiles.md#review).

``approve`` records the approver, the time and the spec's content hash, bumps the revision and
rewrites the file atomically; the running stage reads it on its next sync and enforces it. A
``learning`` profile is refused (its window is open) and a ``tainted`` one unless
``--accept-taint`` says a human looked at the rule hits. ``import`` validates each file and
places it atomically; ``export`` copies a directory's profiles (a state directory's, to review
in Git).
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import sys
import time
from pathlib import Path
from typing import Optional, TextIO

from otelguard.config import ConfigError
from otelguard.processors.profiles.document import (
    SPEC_KEYS, SUFFIX, Approval, ProfileDocument, Spec, content_hash, dump, file_name, iso, load,
    write_atomic,
)


def _files(directory: str) -> list[Path]:
    return sorted(p for p in Path(directory).glob(f"*{SUFFIX}") if not p.name.startswith("."))


def _load(path: Path, err: TextIO) -> Optional[ProfileDocument]:
    try:
        return load(path)
    except (ConfigError, OSError) as exc:
        err.write(f"{path}: {exc}\n")
        return None


def _entries(spec: Spec) -> int:
    return sum(len(getattr(spec, key)) for key in SPEC_KEYS)


HEADER = (f"{'WORKLOAD':60} {'STATE':9} {'ENTRIES':>7} {'QUARANTINED':>11} {'TAINTED':>7} "
          f"{'PARTIAL':>7}\n")


def row(doc: ProfileDocument) -> str:
    """One ``list`` line; an approved profile whose spec lost its hash shows as TAMPERED."""
    st = doc.status
    state: str = st.state
    if state == "approved" and (st.approval is None
                                or st.approval.content_hash != content_hash(doc.spec)):
        state = "TAMPERED"
    return (f"{doc.metadata.workload:60} {state:9} {_entries(doc.spec):>7} "
            f"{len(st.quarantine):>11} {len(st.tainted):>7} {'yes' if st.partial else 'no':>7}\n")


def list_main(args: argparse.Namespace) -> int:
    if args.kube:
        from otelguard.processors.profiles import cluster_cli
        return cluster_cli.list_main(args)
    if not args.directory:
        sys.stderr.write("otelguard profile list: give DIR (or --kube)\n")
        return 2
    bad = 0
    sys.stdout.write(HEADER)
    for path in _files(args.directory):
        doc = _load(path, sys.stderr)
        if doc is None:
            bad += 1
            continue
        sys.stdout.write(row(doc))
    return 1 if bad else 0


def _spec_lines(spec: Spec) -> list[str]:
    lines = []
    for key in SPEC_KEYS:
        for item in getattr(spec, key):
            if isinstance(item, str):
                lines.append(f"{key}: {item}")
            else:
                lines.append(f"{key}: {item.exe} <- {item.parent} [{item.argv}]")
    return lines


def show_main(args: argparse.Namespace) -> int:
    if args.kube:
        from otelguard.processors.profiles import cluster_cli
        return cluster_cli.show_main(args)
    doc = _load(Path(args.file), sys.stderr)
    if doc is None:
        return 1
    show(doc, sys.stdout)
    return 0


def show(doc: ProfileDocument, out: TextIO) -> None:
    st = doc.status
    out.write(f"workload  {doc.metadata.workload}\nrevision  {doc.metadata.revision}\n"
              f"state     {st.state}\nhash      {content_hash(doc.spec)}\n")
    if st.approval:
        ok = st.approval.content_hash == content_hash(doc.spec)
        out.write(f"approved  by {st.approval.by} at {st.approval.at}"
                  f"{'' if ok else ' -- SPEC CHANGED SINCE: not enforced'}\n")
    if st.learning:
        out.write(f"learning  {st.learning.started} .. {st.learning.ended or st.learning.ends}, "
                  f"{st.learning.observations} observations, {len(st.learning.instances)} "
                  "instance(s)\n")
    for t in st.tainted:
        out.write(f"TAINTED   {t.rule} at {t.at} ({t.instance})\n")
    if st.partial:
        out.write(f"PARTIAL   {st.overflow} observation(s) past the bounds were not learned\n")
    for line in _spec_lines(doc.spec):
        out.write(f"  allow   {line}\n")
    for q in st.quarantine:
        out.write(f"  quarantined {q.kind}: {q.value} ({q.reason}; {q.observations} seen)\n")


def diff_main(args: argparse.Namespace) -> int:
    """Entries added and removed between two versions of a profile (exit 1 when they differ)."""
    if args.kube:
        from otelguard.processors.profiles import cluster_cli
        return cluster_cli.diff_main(args)
    old, new = _load(Path(args.old), sys.stderr), _load(Path(args.new), sys.stderr)
    if old is None or new is None:
        return 2
    return diff(old, new, sys.stdout)


def diff(old: ProfileDocument, new: ProfileDocument, out: TextIO) -> int:
    before, after = set(_spec_lines(old.spec)), set(_spec_lines(new.spec))
    for line in sorted(after - before):
        out.write(f"+ {line}\n")
    for line in sorted(before - after):
        out.write(f"- {line}\n")
    if old.status.state != new.status.state:
        out.write(f"~ state: {old.status.state} -> {new.status.state}\n")
    return 1 if before != after else 0


def approved(doc: ProfileDocument, by: str, accept_taint: bool = False,
             now: Optional[float] = None, where: str = "") -> ProfileDocument:
    """``doc`` with its current spec approved: approver, time, content hash, revision + 1.
    ValueError (naming ``where``) when refused: still learning, or tainted without
    ``accept_taint``."""
    st = doc.status
    where = where or doc.metadata.workload
    if st.state == "learning":
        raise ValueError(f"{where}: still learning (until "
                         f"{st.learning.ends if st.learning else '?'}); approve when learned")
    if st.state == "tainted" and not accept_taint:
        rules = ", ".join(sorted({t.rule for t in st.tainted}))
        raise ValueError(f"{where}: learning was tainted by rule detections ({rules}); review "
                         "them and the spec, then approve with --accept-taint")
    approval = Approval(by, iso(time.time() if now is None else now), content_hash(doc.spec))
    return dataclasses.replace(
        doc, metadata=dataclasses.replace(doc.metadata, revision=doc.metadata.revision + 1),
        status=dataclasses.replace(st, state="approved", approval=approval))


def approve(path: Path, by: str, accept_taint: bool = False,
            now: Optional[float] = None) -> str:
    """Approve the file's current spec; returns the content hash (ValueError when refused)."""
    doc = approved(load(path), by, accept_taint, now, str(path))
    write_atomic(path, dump(doc))
    assert doc.status.approval is not None
    return doc.status.approval.content_hash


def approve_main(args: argparse.Namespace) -> int:
    if args.kube:
        from otelguard.processors.profiles import cluster_cli
        return cluster_cli.approve_main(args)
    try:
        digest = approve(Path(args.file), args.by or getpass.getuser(), args.accept_taint)
    except (ConfigError, OSError, ValueError) as exc:
        sys.stderr.write(f"{exc}\n")
        return 1
    sys.stdout.write(f"approved {args.file} ({digest})\n")
    return 0


def export_main(args: argparse.Namespace) -> int:
    """Copy every valid profile of DIR (or of the cluster, --kube) into OUT (one file per
    workload, stable names)."""
    if args.kube:
        from otelguard.processors.profiles import cluster_cli
        return cluster_cli.export_main(args)
    if not args.out:
        sys.stderr.write("otelguard profile export: give DIR OUT (or --kube OUT)\n")
        return 2
    bad = 0
    for path in _files(args.directory):
        doc = _load(path, sys.stderr)
        if doc is None:
            bad += 1
            continue
        write_atomic(Path(args.out) / file_name(doc.metadata.workload), dump(doc))
    return 1 if bad else 0


def import_main(args: argparse.Namespace) -> int:
    """Validate each FILE and place it in DIR under its workload's file name (what a running
    stage reads on its next sync; a loaded file wins over learning); with --kube, as objects."""
    docs = [(Path(f), _load(Path(f), sys.stderr)) for f in args.files]
    if any(doc is None for _, doc in docs):
        return 1
    if args.kube:
        from otelguard.processors.profiles import cluster_cli
        return cluster_cli.import_docs(args, [doc for _, doc in docs if doc is not None])
    if not args.into:
        sys.stderr.write("otelguard profile import: give --into DIR (or --kube)\n")
        return 2
    for path, doc in docs:
        assert doc is not None
        target = Path(args.into) / file_name(doc.metadata.workload)
        write_atomic(target, path.read_text())
        sys.stdout.write(f"{doc.metadata.workload} -> {target}\n")
    return 0
