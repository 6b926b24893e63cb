"""Secrets out of command lines before they leave the node (docs/architecture.md#redaction).

Pure functions over argv, applied once per exec (cost: a few regex searches per argument, about
5 µs for a 10-argument command). What counts as a secret:

* the value of a long flag whose name says secret (``--password``, ``--db-token``, ``--api-key``,
  ``--client-secret``...), both ``--flag value`` and ``--flag=value``; names that point at a
  *file* holding the secret (``--token-file``, ``--password-path``) are kept: a path is evidence;
* program-specific short flags whose meaning is a password: ``mysql -pSECRET`` (attached only:
  ``mysql -p db`` names a database), ``sshpass -p X``, ``redis-cli -a X``; ``-p`` elsewhere is
  usually a port and is kept;
* ``KEY=VALUE`` arguments whose KEY looks secret (``AWS_SECRET_ACCESS_KEY=...``, ``password=...``);
* URL userinfo passwords (``scheme://user:pass@host`` keeps the user, drops the password);
* ``Bearer <token>`` / ``Basic <token>`` (also split over two arguments).

Environment variables: the sensor captures only allowlisted names (``sensor.probe.env_names``);
:func:`redact_env` masks a value whose name looks secret and URL passwords or auth tokens inside
any other (``HTTPS_PROXY=http://user:***@proxy:3128``).
"""

from __future__ import annotations

import re
from typing import Sequence

MASK = "***"

_SECRET_WORD = r"(?:pass(?:word|wd|phrase)?|pwd|secret|token|api[-_]?key|access[-_]?key|" \
    r"private[-_]?key|secret[-_]?key|auth[-_]?key|credentials?|client[-_]?secret|session[-_]?key)"
# a long flag: --name or -name (Go style single dash), name containing a secret word
_LONG_FLAG = re.compile(r"^--?(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*)$")
_LONG_FLAG_EQ = re.compile(r"^(?P<flag>--?(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*))=(?P<value>.*)$", re.S)
_SECRET_NAME = re.compile(_SECRET_WORD, re.I)
_FILE_NAME = re.compile(r"(?:[-_.](?:file|path|dir|env)$)", re.I)
_KEY_VALUE = re.compile(r"^(?P<key>[A-Za-z_][A-Za-z0-9_.-]*)=(?P<value>.+)$", re.S)
_URL_USERINFO = re.compile(r"(?P<pre>[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*:)(?P<pw>[^\s@/]+)(?=@)")
_AUTH_SCHEME = re.compile(r"(?P<pre>\b(?:Bearer|Basic|Token)\s+)(?P<tok>[^\s\"',]+)", re.I)
_AUTH_WORD = re.compile(r"^(?:Bearer|Basic|Token)$", re.I)

# program basename -> (short flags taking a password as the NEXT argument, attached-only flags)
_SHORT_FLAGS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "mysql": (frozenset(), frozenset({"-p"})),
    "mysqldump": (frozenset(), frozenset({"-p"})),
    "mysqladmin": (frozenset(), frozenset({"-p"})),
    "mariadb": (frozenset(), frozenset({"-p"})),
    "mariadb-dump": (frozenset(), frozenset({"-p"})),
    "sshpass": (frozenset({"-p"}), frozenset({"-p"})),
    "redis-cli": (frozenset({"-a"}), frozenset()),
    "smbclient": (frozenset({"-P"}), frozenset()),
}


def _secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name)) and not _FILE_NAME.search(name)


def _scrub_inline(arg: str) -> str:
    """URL passwords and auth-scheme tokens anywhere inside one argument."""
    if "://" in arg and "@" in arg:
        arg = _URL_USERINFO.sub(lambda m: m.group("pre") + MASK, arg)
    if " " in arg or "\t" in arg:
        arg = _AUTH_SCHEME.sub(lambda m: m.group("pre") + MASK, arg)
    return arg


def redact_args(argv: Sequence[str]) -> list[str]:
    """argv with secret values replaced by ``***``; argument count and order are kept."""
    out: list[str] = []
    prog = argv[0].rsplit("/", 1)[-1] if argv else ""
    next_flags, attached_flags = _SHORT_FLAGS.get(prog, (frozenset(), frozenset()))
    mask_next = False
    for i, arg in enumerate(argv):
        if mask_next:
            out.append(MASK)
            mask_next = False
            continue
        if i == 0:
            out.append(_scrub_inline(arg))
            continue
        m = _LONG_FLAG_EQ.match(arg)
        if m and _secret_name(m.group("name")):
            out.append(f"{m.group('flag')}={MASK}")
            continue
        m = _LONG_FLAG.match(arg)
        if m and arg.startswith("--") and _secret_name(m.group("name")):
            out.append(arg)
            mask_next = True
            continue
        if arg in next_flags:
            out.append(arg)
            mask_next = True
            continue
        short = next((f for f in attached_flags if arg.startswith(f) and len(arg) > len(f)), None)
        if short is not None:
            out.append(short + MASK)
            continue
        if m and _secret_name(m.group("name")) and not arg.startswith("--"):
            # Go-style single-dash long flag (-password X); a lone short flag never matches
            # because secret words are longer than one letter
            out.append(arg)
            mask_next = True
            continue
        kv = _KEY_VALUE.match(arg)
        if kv and _secret_name(kv.group("key")):
            out.append(f"{kv.group('key')}={MASK}")
            continue
        if _AUTH_WORD.match(arg) and i + 1 < len(argv):
            out.append(arg)
            mask_next = True
            continue
        out.append(_scrub_inline(arg))
    return out


def command_line(argv: Sequence[str]) -> str:
    """The redacted command line: arguments joined by single spaces (what Falco's
    ``proc.cmdline`` rules match against)."""
    return " ".join(redact_args(argv))


def redact_env(entries: Sequence[str]) -> list[str]:
    """``NAME=VALUE`` entries with secret values replaced by ``***``: the whole value when the
    name looks secret, else URL passwords and auth-scheme tokens inside it."""
    out = []
    for entry in entries:
        name, eq, value = entry.partition("=")
        if eq and _secret_name(name):
            out.append(f"{name}={MASK}")
        else:
            out.append(f"{name}{eq}{_scrub_inline(value)}" if eq else _scrub_inline(entry))
    return out
