"""The one config error: every problem of a file at once, each with its dotted path and file:line.

:class:`ConfigError` is raised by every loader of every config kind (agent, ``otelguard run``,
pipeline, rule files) so commands catch one type and print the whole list. A ``__post_init__``
that finds several bad fields raises :class:`InvalidFields` (a ``ValueError``) through
:class:`Checks`, and the loader turns each into an issue at that field's path and line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence


@dataclass(frozen=True)
class ConfigIssue:
    """One config problem: dotted path (``processors[1].config.hold_seconds``) and where it is."""

    path: str
    message: str
    file: Optional[str] = None
    line: Optional[int] = None

    def __str__(self) -> str:
        where = ""
        if self.file is not None and self.line is not None:
            where = f"{self.file}:{self.line}: "
        elif self.file is not None:
            where = f"{self.file}: "
        elif self.line is not None:
            where = f"line {self.line}: "
        return f"{where}{self.path or '<root>'}: {self.message}"


class ConfigError(Exception):
    """All problems found in a config, reported together so one edit fixes them all."""

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        self.issues = tuple(issues)
        lines = "\n".join(f"  {issue}" for issue in self.issues)
        super().__init__(f"{len(self.issues)} config error(s):\n{lines}")

    @property
    def messages(self) -> list[str]:
        """One line per issue, as printed."""
        return [str(issue) for issue in self.issues]


class InvalidFields(ValueError):
    """Raised by a config dataclass's ``__post_init__`` for bad values of named fields.

    ``problems`` are (field, message) pairs; the field is relative to the dataclass and may go
    deeper (``probe.argv_max``, ``cgroup_scope[0]``). Built with :class:`Checks`.
    """

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(f"{name}: {message}" for name, message in self.problems))


class Checks:
    """Collects a dataclass's value checks so all of them are reported, each at its field::

        def __post_init__(self) -> None:
            checks = Checks()
            checks.above(self, 0, "max_batch")
            checks.done()
    """

    def __init__(self) -> None:
        self.problems: list[tuple[str, str]] = []

    def add(self, name: str, message: str) -> None:
        self.problems.append((name, message))

    def above(self, owner: object, bound: float, *names: str) -> None:
        """Each named field of ``owner`` must be greater than ``bound``."""
        for name in names:
            value = getattr(owner, name)
            if value <= bound:
                self.add(name, f"must be > {bound}, got {value}")

    def at_least(self, owner: object, bound: float, *names: str) -> None:
        """Each named field of ``owner`` must be ``bound`` or more."""
        for name in names:
            value = getattr(owner, name)
            if value < bound:
                self.add(name, f"must be >= {bound}, got {value}")

    def done(self) -> None:
        if self.problems:
            raise InvalidFields(self.problems)
