#!/usr/bin/env python3
"""The values table of the chart's README, generated from the comments in its values.yaml.

    python3 scripts/helm_values_doc.py           # rewrite the table in deploy/helm/otelguard/README.md
    python3 scripts/helm_values_doc.py --check   # exit 1 when the table is stale or a value undocumented

A comment block starting ``# --`` directly above a key documents that key (continued by the
``#`` lines below it); its row shows the key's dotted path, type and default (from the parsed
file). Every value must be documented, by itself or by a documented parent. The table sits in
README.md between the two MARKERS lines; the rest of the README is hand-written.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "deploy" / "helm" / "otelguard"
MARKERS = ("<!-- values-table:start (scripts/helm_values_doc.py) -->", "<!-- values-table:end -->")
_KEY = re.compile(r"^(\s*)([A-Za-z0-9_.-]+):(.*)$")
_BLOCK = re.compile(r"[|>][-+]?\s*(#.*)?$")


def documented_keys(text: str) -> dict[tuple[str, ...], str]:
    """key path -> its ``# --`` description, in file order."""
    docs: dict[tuple[str, ...], str] = {}
    stack: list[tuple[int, str]] = []
    pending: list[str] | None = None
    block_indent: int | None = None   # inside a block scalar deeper than this
    for line in text.splitlines():
        indent = len(line) - len(line.lstrip())
        if block_indent is not None:
            if not line.strip() or indent > block_indent:
                continue
            block_indent = None
        stripped = line.strip()
        if stripped.startswith("# --"):
            pending = [stripped[4:].strip()]
            continue
        if stripped.startswith("#"):
            if pending is not None:
                pending.append(stripped[1:].strip())
            continue
        m = _KEY.match(line)
        if not m:
            pending = None
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, m.group(2)))
        if pending is not None:
            docs[tuple(k for _, k in stack)] = " ".join(pending)
            pending = None
        if _BLOCK.match(m.group(3).strip()):
            block_indent = indent
    return docs


def leaves(value: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if isinstance(value, dict) and value:
        return [leaf for k, v in value.items() for leaf in leaves(v, (*path, str(k)))]
    return [path]


def lookup(values: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        values = values[key]
    return values


def _type(value: Any) -> str:
    for t, name in ((bool, "bool"), (int, "int"), (str, "string"), (list, "list"), (dict, "object")):
        if isinstance(value, t):
            return name
    return type(value).__name__


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;")


def table(values_text: str) -> str:
    values = yaml.safe_load(values_text)
    rows = ["| Key | Type | Default | Description |", "|---|---|---|---|"]
    for path, doc in documented_keys(values_text).items():
        value = lookup(values, path)
        default = json.dumps(value, separators=(", ", ": "))
        shown = f"`{_cell(default)}`" if len(default) <= 70 and "\n" not in str(value) else "see values.yaml"
        rows.append(f"| `{'.'.join(path)}` | {_type(value)} | {shown} | {_cell(doc)} |")
    return "\n".join(rows) + "\n"


def undocumented(values_text: str) -> list[str]:
    docs = documented_keys(values_text)
    values = yaml.safe_load(values_text)
    return [".".join(leaf) for leaf in leaves(values)
            if not any(leaf[:n] in docs for n in range(1, len(leaf) + 1))]


def with_table(readme: str, values_text: str) -> str:
    start, end = MARKERS
    head, sep, rest = readme.partition(start)
    _, sep2, tail = rest.partition(end)
    if not sep or not sep2:
        raise SystemExit(f"helm_values_doc: README.md lacks the markers {start!r} ... {end!r}")
    return f"{head}{start}\n{table(values_text)}{end}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--chart", type=Path, default=CHART)
    args = parser.parse_args(argv)
    values_text = (args.chart / "values.yaml").read_text()
    readme_path = args.chart / "README.md"
    missing = undocumented(values_text)
    if missing:
        print("undocumented values (add a '# --' comment above them or a parent):\n  "
              + "\n  ".join(missing))
        return 1
    new = with_table(readme_path.read_text(), values_text)
    if args.check:
        if new != readme_path.read_text():
            print(f"stale: {readme_path}: run python3 scripts/helm_values_doc.py")
            return 1
        return 0
    readme_path.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
