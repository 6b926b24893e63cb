"""``otelguard config schema``: the JSON Schema of each config file kind, from its dataclasses.

Published under ``docs/config/`` so editors validate config files (a file opts in with a
``# yaml-language-server: $schema=...`` first line); ``tests/config/test_schema.py`` fails when
the published files differ from what the dataclasses say. Regenerate with::

    otelguard config schema --write docs/config
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def documents() -> dict[str, tuple[type[Any], str]]:
    """Config kind -> (top-level dataclass, title); the file is ``<kind>.schema.json``."""
    from otelguard.agent import AgentConfig
    from otelguard.processors.config import PipelineConfig
    from otelguard.runner import RunConfig

    return {
        "agent": (AgentConfig, "otelguard agent --config"),
        "run": (RunConfig, "otelguard run --config"),
        "pipeline": (PipelineConfig, "otelguard processor --config"),
    }


def published() -> dict[str, str]:
    """File name -> the text ``--write`` puts there."""
    from otelguard.config import document_schema, render

    return {f"{kind}.schema.json": render(document_schema(cls, title))
            for kind, (cls, title) in documents().items()}


def main(args: argparse.Namespace) -> int:
    texts = published()
    if args.write:
        out = Path(args.write)
        out.mkdir(parents=True, exist_ok=True)
        for name, text in texts.items():
            (out / name).write_text(text, encoding="utf-8")
            print(f"wrote {out / name}", file=sys.stderr)
        return 0
    if not args.kind:
        print("otelguard config schema: give a kind (agent, run, pipeline) or --write DIR",
              file=sys.stderr)
        return 2
    sys.stdout.write(texts[f"{args.kind}.schema.json"])
    return 0
