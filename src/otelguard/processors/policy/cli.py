"""``otelguard policy validate DIR`` and ``otelguard policy test DIR --replay CAPTURE``.

validate checks every kind of the tree at once (tree.py) and prints the rules report of
``otelguard rules validate``, each exception (ACTIVE or EXPIRED, with owner and date), each
profile and response policy, every problem with file:line, and the tree's revision. Exit codes
are those of ``rules validate``: 0 everything loads and every rule can run; 1 errors (in any
kind; the stage would refuse the tree); 3 it loads, but some rules cannot run on this sensor or
were skipped. An expired exception is a warning: it no longer applies, the tree still loads.

test replays a capture (replay.py) and prints each detection, or checks them against an
expectation file: exit 0 they match, 1 some are missing or unexpected (or the tree does not
load), 2 the capture or expectation cannot be read.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from otelguard.config import ConfigError
from otelguard.processors.detection.cli import EXIT_ERRORS, EXIT_NOT_ALL_RUN, EXIT_OK, report
from otelguard.processors.policy.exceptions import AnyException, ProfileException
from otelguard.processors.policy.replay import ReplayError, compare, load_expected, replay
from otelguard.processors.policy.tree import PolicyTree, load_tree

EXIT_UNREADABLE = 2


def describe(tree: PolicyTree, out: TextIO) -> None:
    counts = ", ".join(f"{len(v)} {k}" for k, v in tree.files.items())
    out.write(f"policy {tree.root} revision {tree.revision} ({counts} file(s))\n")
    if tree.files["rules"]:
        report(tree.ruleset, out)
    else:
        out.write("no rules/ files: no Falco rules in this tree\n")
    listed: list[AnyException] = [*tree.exceptions, *tree.profile_exceptions]
    listed += [e for e in tree.expired if e not in listed]
    for e in listed:
        state = "EXPIRED" if e in tree.expired else "ACTIVE"
        tail = f"; expired on {e.expires.isoformat()}, not applied" if state == "EXPIRED" \
            else f"; until {e.expires.isoformat()}"
        target = f"profile {e.target}" if isinstance(e, ProfileException) \
            else f"rule {e.spec.rule!r}"
        out.write(f"{state:9} exception {e.name} -> {target} ({e.file}:{e.line}) "
                  f"owner {e.spec.owner}{tail}\n")
    for f, doc in tree.profiles:
        note = "" if doc.status.state == "approved" else \
            " (not enforced: only approved profiles run)"
        out.write(f"PROFILE   {doc.metadata.workload} ({f}) {doc.status.state}{note}\n")
    for p in tree.responses.policies:
        out.write(f"RESPONSE  {p.name} ({p.source}) mode {p.mode}\n")
    for issue in tree.issues:
        out.write(f"{issue}\n")
    applied = len(tree.exceptions) + len(tree.profile_exceptions) - sum(
        isinstance(e, ProfileException) for e in tree.expired)
    out.write(f"{applied} exception(s) applied, {len(tree.expired)} expired, "
              f"{len(tree.profiles)} profile(s), {len(tree.responses.policies)} response "
              f"polic(ies), {len(tree.issues) + len(tree.ruleset.errors)} error(s)\n")


def validate_main(args: argparse.Namespace) -> int:
    tree = load_tree(args.directory)
    describe(tree, sys.stdout)
    if not tree.ok:
        return EXIT_ERRORS
    rs = tree.ruleset
    return EXIT_NOT_ALL_RUN if rs.count("cannot-run") or rs.count("skipped") else EXIT_OK


def test_main(args: argparse.Namespace) -> int:
    tree = load_tree(args.directory)
    if not tree.ok:
        describe(tree, sys.stderr)
        return EXIT_ERRORS
    for e in tree.expired:
        sys.stderr.write(f"warning: exception {e.name} ({e.file}:{e.line}) expired on "
                         f"{e.expires.isoformat()}: not applied\n")
    try:
        expected = load_expected(args.expect) if args.expect else None
        found = replay(tree, args.replay)
    except (ReplayError, ConfigError) as exc:
        sys.stderr.write(f"otelguard policy test: {exc}\n")
        return EXIT_UNREADABLE
    out = sys.stdout
    out.write(f"policy revision {tree.revision}: {found.records} record(s) replayed, "
              f"{len(found.detections)} detection(s)\n")
    if expected is None:
        for d in found.detections:
            out.write(f"{d.priority:13} {d.rule} record={d.record or '-'}\n")
        return EXIT_OK
    missing, unexpected = compare(expected, found.detections)
    for m in missing:
        out.write(f"MISSING    {m}\n")
    for d in unexpected:
        out.write(f"UNEXPECTED {d.priority} {d.rule} record={d.record or '-'}\n")
    ok = not missing and not unexpected
    out.write(f"{'PASS' if ok else 'FAIL'}: {len(expected)} expected, {len(missing)} missing, "
              f"{len(unexpected)} unexpected\n")
    return EXIT_OK if ok else EXIT_ERRORS
