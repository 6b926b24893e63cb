"""Environment variables read by the response unit; the only place in otelguard/response that
reads the environment. Declared in :data:`ENVIRONMENT` (published in docs/configuration.md).
"""

from __future__ import annotations

import os
from typing import Mapping, Optional

from otelguard.config import EnvVar

NAMESPACE = "OTELGUARD_NAMESPACE"

ENVIRONMENT = (
    EnvVar(NAMESPACE, "otelguard",
           "the namespace otelguard itself runs in (the chart sets it from the pod's "
           "metadata.namespace): response policies never act on it unless their "
           "protected_namespaces says otherwise"),
)


def namespace(environ: Optional[Mapping[str, str]] = None) -> str:
    """otelguard's own namespace, '' when unset."""
    env = os.environ if environ is None else environ
    return env.get(NAMESPACE, "")
