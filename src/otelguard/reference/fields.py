"""The field table of docs/rules.md, generated from the detection engine's field registry
(:data:`otelguard.processors.detection.fields.FIELDS`), so the guide cannot drift from what
the engine evaluates: every Falco field, grouped by class, with the OTel attributes it reads
and how it is derived. ``tests/reference/test_fields.py`` fails when the published table is
stale. Regenerate from the repository root with::

    python -m otelguard.reference.fields --write docs/rules.md

(only the text between the two markers is replaced).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from otelguard.processors.detection.fields import (
    EXTENSION_FIELDS, FIELDS, AttrField, FieldSpec, ResourceField,
)

BEGIN = ("<!-- fields: generated from the engine's field registry by "
         "`python -m otelguard.reference.fields --write docs/rules.md`; do not edit -->")
END = "<!-- fields: end -->"
# Falco's field classes, in the registry's order; the heading each group gets
CLASSES = (
    (("evt", "syscall"), "Events: `evt.*`"),
    (("proc", "thread"), "Processes: `proc.*`, `thread.*`"),
    (("user", "group"), "Users and groups: `user.*`, `group.*`"),
    (("fd",), "Files and sockets: `fd.*`"),
    (("container",), "Containers: `container.*`"),
    (("k8s",), "Kubernetes: `k8s.*`"),
)


MAX_KEYS = 6  # past this many (evt.arg: one per event type), the rest are counted


def _reads(spec: FieldSpec) -> str:
    """The OTel attributes a field reads: its evidence keys (record attributes), else the one
    record or Resource attribute its extractor reads as is, else none (derived)."""
    if spec.keys:
        shown = ", ".join(f"`{k}`" for k in spec.keys[:MAX_KEYS])
        more = len(spec.keys) - MAX_KEYS
        return shown + (f" and {more} more (per event type)" if more > 0 else "")
    if isinstance(spec.extract, ResourceField):
        return f"`{spec.extract.key}` (Resource)"
    if isinstance(spec.extract, AttrField):
        return f"`{spec.extract.key}`"
    return "(see how)"


def _name(spec: FieldSpec) -> str:
    arg = "[N]" if spec.arg == "index" else "[arg]" if spec.arg in ("required", "optional") \
        else ""
    return f"`{spec.name}{arg}`"


def _cell(text: str) -> str:
    return text.replace("|", "/").replace("\n", " ")


def _class_of(name: str) -> str:
    return name.split(".", 1)[0]


def table() -> str:
    """The generated Markdown between the markers (without them)."""
    counts = (len(FIELDS), sum(s.available for s in FIELDS.values()))
    out = [f"{counts[0]} Falco fields are known to the engine, {counts[1]} of them provided "
           "by the otelguard sensor. A rule that uses one marked **not available** loads but "
           "cannot run on this sensor (`otelguard rules validate` names it and why); a field "
           "not listed is not a Falco field and the rule does not load."]
    groups = [*CLASSES, (("otelguard",), "otelguard's own fields (not in Falco)")]
    for prefixes, heading in groups:
        if prefixes == ("otelguard",):
            specs = [s for n, s in FIELDS.items() if n in EXTENSION_FIELDS]
        else:
            specs = [s for n, s in FIELDS.items()
                     if _class_of(n) in prefixes and n not in EXTENSION_FIELDS]
        if not specs:
            continue
        out += ["", f"### {heading}", "", "| Falco field | type | OTel attributes read | how |",
                "|---|---|---|---|"]
        for s in specs:
            how = s.source if s.available else f"**not available**: {s.source}"
            out.append(f"| {_name(s)} | {s.type.value} | {_cell(_reads(s))} | {_cell(how)} |")
    return "\n".join(out)


def splice(document: str, generated: str) -> str:
    """``document`` with the text between the markers replaced (ValueError without them)."""
    start, end = document.find(BEGIN), document.find(END)
    if start < 0 or end < start:
        raise ValueError(f"markers not found: {BEGIN!r} ... {END!r}")
    return document[:start + len(BEGIN)] + "\n\n" + generated + "\n\n" + document[end:]


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", default=None, metavar="FILE",
                    help="replace the table between the markers of FILE (docs/rules.md); "
                    "without it the table goes to stdout")
    args = ap.parse_args(argv)
    if args.write is None:
        print(table())
        return 0
    path = Path(args.write)
    try:
        path.write_text(splice(path.read_text(encoding="utf-8"), table()), encoding="utf-8")
    except (OSError, ValueError) as exc:
        print(f"otelguard.reference.fields: {path}: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
