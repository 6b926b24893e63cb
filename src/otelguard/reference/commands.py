"""Every command and flag, read from the real argparse parser (``otelguard.cli.build_parser``).

Walking the parser, not a copy of it, is what keeps the reference true: a flag added to
``cli.py`` appears in docs/configuration.md at the next ``otelguard config reference --write``,
and the staleness test fails until it does. Descriptions are the ``help=`` strings.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Optional


REQUIRED = "\0required"  # Flag.default of an argument that must be given


@dataclass(frozen=True)
class Flag:
    """One argument of a command, as the reference shows it."""

    usage: str  # "--otlp-endpoint HOST:PORT", "probe", "files FILE ..."
    default: str  # "" when there is none to show
    help: str


@dataclass(frozen=True)
class Command:
    """A command that runs something (a leaf of the subcommand tree)."""

    path: str  # "otelguard rules validate"
    help: str
    flags: tuple[Flag, ...]


def commands(parser: argparse.ArgumentParser, path: Optional[str] = None,
             help_text: str = "") -> list[Command]:
    """Every leaf command under ``parser``, depth first in the order the parser declares them."""
    if path is None:  # the root command: its own flags (--version) under the package's line
        help_text = help_text or (parser.description or "").strip().rstrip(".")
    path = path or parser.prog
    out: list[Command] = []
    flags: list[Flag] = []
    for action in parser._actions:  # argparse has no public walk over its actions
        if isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                out.extend(commands(sub, f"{path} {name}", helps.get(name, "")))
            continue
        flags.append(Flag(_usage(action), _default(action), action.help or ""))
    if flags or not out:
        out.insert(0, Command(path, help_text, tuple(flags)))
    return out


def _usage(action: argparse.Action) -> str:
    """How the argument is written: option strings and metavar, or the positional's name."""
    if action.choices is not None:
        value = "{" + ",".join(str(c) for c in action.choices) + "}"
    else:
        value = _metavar(action)
    if not action.option_strings:
        name = action.dest
        shown = value if value != name.upper() else name
        return _repeat(shown, action.nargs)
    names = ", ".join(action.option_strings)
    if action.nargs == 0:
        return names
    again = " (repeatable)" if isinstance(action, argparse._AppendAction) else ""
    return f"{names} {_repeat(value, action.nargs)}{again}"


def _metavar(action: argparse.Action) -> str:
    meta: Any = action.metavar
    if isinstance(meta, tuple):
        return " ".join(str(m) for m in meta)
    return str(meta) if meta is not None else action.dest.upper()


def _repeat(value: str, nargs: Any) -> str:
    if nargs == "+":
        return f"{value} [{value} ...]"
    if nargs == "*":
        return f"[{value} ...]"
    if nargs == "?":
        return f"[{value}]"
    return value


def _default(action: argparse.Action) -> str:
    """The default worth showing: nothing for unset, off switches and suppressed values."""
    if action.required:
        return REQUIRED
    default = action.default
    if default is None or default is argparse.SUPPRESS or default is False:
        return ""
    if isinstance(default, (list, tuple)):
        return " ".join(str(d) for d in default)
    return str(default)
