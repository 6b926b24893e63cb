"""A policy tree: everything a security team reviews in Git, loaded as one revision.

Layout (docs/policy.md)::

    rules/        Falco rules files (what the falco_rules stage runs, in name order)
    exceptions/   RuleException documents (owner, expiry; compiled into the rules) and
                  ProfileException documents (owner, expiry; applied by the profiles stage)
    profiles/     WorkloadProfile documents (the profiles stage's directory)
    responses/    ResponsePolicy documents (the responder's policies)
    tests/        replay captures and expectations (``otelguard policy test``; not hashed)

Every kind is checked at once and every problem located (file:line). The revision is one
content hash (12 hex of SHA-256) over every policy file's relative path and content, in path
order, so two checkouts of the same commit have the same revision wherever they live.
Markdown files and dot-entries (``.git``) are ignored; anything else outside the four kinds is
reported. Cost: dominated by compiling the rules (well under a second for Falco's files).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Optional, Union

from otelguard.config import ConfigError, ConfigIssue
from otelguard.processors import metrics
from otelguard.processors.detection.loader import load_rules
from otelguard.processors.detection.ruleset import RuleSet
from otelguard.processors.policy.exceptions import (
    AnyException, ProfileException, RuleException, load_exceptions, today_utc,
)
from otelguard.processors.profiles.document import ProfileDocument
from otelguard.processors.profiles.document import load as load_profile
from otelguard.response.policy import PolicySet, load_policies

log = logging.getLogger(__name__)

KINDS = ("rules", "exceptions", "profiles", "responses")
TESTS_DIR = "tests"
YAML_SUFFIXES = (".yaml", ".yml")
IGNORED_SUFFIXES = (".md",)


@dataclass
class PolicyTree:
    root: Path
    revision: str = ""
    files: dict[str, list[Path]] = field(default_factory=lambda: {k: [] for k in KINDS})
    issues: list[ConfigIssue] = field(default_factory=list)  # every non-rules problem
    ruleset: RuleSet = field(default_factory=RuleSet)
    exceptions: list[RuleException] = field(default_factory=list)  # applied
    # ProfileExceptions, expired ones included: the profiles stage re-checks the date
    profile_exceptions: list[ProfileException] = field(default_factory=list)
    expired: list[AnyException] = field(default_factory=list)  # past their date: not applied
    profiles: list[tuple[Path, ProfileDocument]] = field(default_factory=list)
    responses: PolicySet = field(default_factory=lambda: PolicySet(()))

    @property
    def ok(self) -> bool:
        return not self.issues and self.ruleset.ok

    @property
    def profiles_dir(self) -> Path:
        return self.root / "profiles"

    @property
    def responses_dir(self) -> Path:
        return self.root / "responses"


def revision_of(root: Path, files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in sorted(files, key=lambda p: p.relative_to(root).as_posix()):
        h.update(f"{f.relative_to(root).as_posix()}\0".encode())
        h.update(hashlib.sha256(f.read_bytes()).hexdigest().encode() + b"\n")
    return h.hexdigest()[:12]


def _classify(tree: PolicyTree) -> None:
    root = tree.root
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or entry.name == TESTS_DIR \
                or (entry.is_file() and entry.suffix in IGNORED_SUFFIXES):
            continue
        if entry.name not in KINDS or not entry.is_dir():
            tree.issues.append(ConfigIssue(entry.name, "unknown entry: a policy tree holds "
                                           + ", ".join(f"{k}/" for k in KINDS)
                                           + f" (and {TESTS_DIR}/, *.md)", str(entry)))
            continue
        for f in sorted(entry.rglob("*")):
            rel = f.relative_to(entry)
            if any(part.startswith(".") for part in rel.parts) or f.is_dir():
                continue
            if f.suffix in IGNORED_SUFFIXES:
                continue
            if f.suffix not in YAML_SUFFIXES:
                tree.issues.append(ConfigIssue(entry.name, "unknown file: not YAML "
                                               f"({', '.join(YAML_SUFFIXES)})", str(f)))
            elif f.parent != entry:
                tree.issues.append(ConfigIssue(entry.name, "nested directories are not read: "
                                               f"move the file up into {entry.name}/", str(f)))
            else:
                tree.files[entry.name].append(f)


def tree_revision(root: Union[str, Path]) -> str:
    """The revision :func:`load_tree` would give, without loading anything (a stat and a read
    of each policy file): what live reload compares."""
    tree = PolicyTree(Path(root))
    if not tree.root.is_dir():
        return ""
    _classify(tree)
    return revision_of(tree.root, [f for k in KINDS for f in tree.files[k]])


def load_tree(root: Union[str, Path], today: Optional[date] = None,
              append_output: str = "", actions: Optional[set[str]] = None) -> PolicyTree:
    """Read and check every kind of ``root``; inspect ``ok``, ``issues``, ``ruleset.errors``.
    ``actions``: the response action names policies may use (default: the registry's).
    Expired exceptions (``today``, default the UTC date) are listed, logged, counted in the
    ``otelguard_policy_exceptions_expired`` gauge, and not applied."""
    tree = PolicyTree(Path(root))
    if not tree.root.is_dir():
        tree.issues.append(ConfigIssue("", "not a directory", str(root)))
        return tree
    _classify(tree)
    tree.revision = revision_of(tree.root, [f for k in KINDS for f in tree.files[k]])
    day = today or today_utc()
    loaded, problems = load_exceptions(tree.files["exceptions"])
    tree.issues += problems
    for e in loaded:
        if isinstance(e, ProfileException):
            tree.profile_exceptions.append(e)
            if e.expired(day):
                tree.expired.append(e)
            continue
        bad = e.field_issues()
        tree.issues += bad
        if not bad:
            (tree.expired if e.expired(day) else tree.exceptions).append(e)
    for x in tree.expired:
        log.warning("policy %s: exception %r (%s:%s, owner %s) expired on %s: not applied",
                    tree.revision, x.name, x.file, x.line, x.spec.owner, x.expires.isoformat())
    metrics.exceptions_expired.set(len(tree.expired))
    tree.ruleset = load_rules(tree.files["rules"], append_output=append_output,
                              extra=[e.item() for e in tree.exceptions])
    for f in tree.files["profiles"]:
        try:
            tree.profiles.append((f, load_profile(f)))
        except ConfigError as exc:
            tree.issues += exc.issues
    if tree.files["responses"]:
        try:
            tree.responses = load_policies(tree.files["responses"], actions)
        except ConfigError as exc:
            tree.issues += exc.issues
    return tree


def checked_tree(root: Union[str, Path], append_output: str = "",
                 actions: Optional[set[str]] = None) -> PolicyTree:
    """:func:`load_tree` for a stage that runs the tree: it must validate whole, else
    ConfigError (or RulesError for the rules) with every problem at file:line. ``actions``:
    the response action names available (default: the registry's)."""
    tree = load_tree(root, append_output=append_output, actions=actions)
    if tree.issues:
        raise ConfigError(tree.issues)
    tree.ruleset.raise_if_errors()
    return tree
