"""``otelguard config reference``: docs/configuration.md, generated from the code.

Every command and flag (the argparse parser), every environment variable (the settings modules'
declarations and the Collector configs' ``${env:...}``) and every config key (the JSON Schemas of
``otelguard config schema``). ``tests/config/test_reference.py`` fails when the published file
is stale or when code reads an environment variable no settings module declares. Regenerate
from the repository root with::

    otelguard config reference --write docs/configuration.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from otelguard.reference.document import render

__all__ = ["main", "render"]


def main(args: argparse.Namespace) -> int:
    root = Path(args.repo)
    missing = [d for d in ("otel-config", "deploy") if not (root / d).is_dir()]
    if missing:
        print(f"otelguard config reference: {root.resolve()} has no {' or '.join(missing)}/; run "
              "it from the repository root or give --repo DIR", file=sys.stderr)
        return 2
    text = render(root)
    if args.write:
        Path(args.write).write_text(text, encoding="utf-8")
        print(f"wrote {args.write}", file=sys.stderr)
        return 0
    sys.stdout.write(text)
    return 0
