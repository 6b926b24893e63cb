"""The profiles stage's view of a policy tree (``policy_dir``, docs/policy.md): the approved
profiles of its ``profiles/`` and the ProfileExceptions of its ``exceptions/``, under the
tree's one revision.

Used by the stage's sync thread only. Every pass hashes the tree (a stat and read of each
policy file, as the reloader does); only a new revision is loaded, and only a tree that
validates whole (the same check as ``otelguard policy validate``) replaces the running one: a
broken one is logged once with every problem at file:line and the previous tree keeps
running. Exceptions are re-checked against the UTC date every pass, so one whose day has
passed stops applying while the service runs, with a warning naming it.
"""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

from otelguard.config import ConfigError
from otelguard.processors.profiles.document import ProfileDocument
from otelguard.processors.profiles.model import APPROVED

if TYPE_CHECKING:  # imported lazily at run time: processors.policy imports this package
    from otelguard.processors.policy.profile_exceptions import (
        ExceptionMatcher, ProfileException,
    )

log = logging.getLogger(__name__)


class TreeProfiles:
    def __init__(self, root: Path, today: Optional[Callable[[], date]] = None) -> None:
        from otelguard.processors.policy.expiry import today_utc

        self.root = root
        self.revision = ""
        self.workloads: frozenset[str] = frozenset()  # the tree's profiles: enforced, not saved
        self.previous_workloads: frozenset[str] = frozenset()
        self._today = today or today_utc
        self._exceptions: list[ProfileException] = []
        self._active: list[ExceptionMatcher] = []  # the unexpired ones
        self._said_expired: set[str] = set()
        self._failed = ""  # the last revision that did not validate (reported once)

    def load(self) -> list[ProfileDocument]:
        """Load the tree now; raises ConfigError (RulesError) with every problem."""
        from otelguard.processors.policy.tree import checked_tree

        tree = checked_tree(self.root)
        self.revision = tree.revision
        self.previous_workloads = self.workloads
        # only approved profiles run (a tampered one is reported by the stage); one learning or
        # learned but not approved is listed by `policy validate` as not enforced
        docs = [doc for _f, doc in tree.profiles if doc.status.state == APPROVED]
        self.workloads = frozenset(d.metadata.workload for d in docs)
        self._exceptions = list(tree.profile_exceptions)
        self._said_expired = {e.name for e in tree.expired}  # load_tree said so already
        self._active = []
        self.expire()
        log.info("profiles: policy %s: %d profile(s), %d profile exception(s) active",
                 self.revision, len(docs), len(self._active))
        return docs

    def poll(self) -> Optional[list[ProfileDocument]]:
        """The tree's profiles when its revision changed and it validates, else None."""
        from otelguard.processors.policy.tree import tree_revision

        revision = tree_revision(self.root)
        if revision in (self.revision, self._failed):
            return None
        try:
            return self.load()
        except ConfigError as exc:
            self._failed = revision
            log.error("profiles: policy %s not loaded, %s keeps running:\n  %s", revision,
                      self.revision, "\n  ".join(exc.messages))
            return None

    def expire(self) -> None:
        """Drop the exceptions whose last day has passed, saying so once each."""
        today = self._today()
        active = []
        for e in self._exceptions:
            if not e.expired(today):
                active.append(e.matcher())
            elif e.name not in self._said_expired:
                self._said_expired.add(e.name)
                log.warning("policy %s: profile exception %r (%s:%s, owner %s) expired on %s: "
                            "no longer applied", self.revision, e.name, e.file, e.line,
                            e.spec.owner, e.expires.isoformat())
        self._active = active

    def excepted(self, workload: str, kind: str, value: str) -> bool:
        return any(m.covers(workload, kind, value) for m in self._active)
