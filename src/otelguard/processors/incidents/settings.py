"""Environment variables read by the incidents stage; the only place in processors/incidents
that reads the environment. Declared in :data:`ENVIRONMENT` (published in
docs/configuration.md).
"""

from __future__ import annotations

import os
from typing import Mapping, Optional

from otelguard.config import EnvVar

LLM_API_KEY = "OTELGUARD_LLM_API_KEY"

ENVIRONMENT = (
    EnvVar(LLM_API_KEY, "no Authorization header is sent",
           "the API key of the incident narrator's OpenAI-compatible endpoint, sent as "
           "\"Authorization: Bearer <key>\" (the default of the incidents stage's "
           "story.llm.api_key_env, which may name another variable; read at each call, so a "
           "rotated key applies without a restart)"),
)


def api_key(name: str, environ: Optional[Mapping[str, str]] = None) -> str:
    """The key in the variable ``name`` (``story.llm.api_key_env``), '' when unset."""
    env = os.environ if environ is None else environ
    return env.get(name, "") if name else ""
