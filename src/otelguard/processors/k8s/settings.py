"""Environment variables the Kubernetes enricher reads (one settings module per package), declared
in :data:`ENVIRONMENT` (published in docs/configuration.md).
"""

from __future__ import annotations

import os
from typing import Optional

from otelguard.config import EnvVar

NODE_NAME_ENV = "OTELGUARD_K8S_NODE_NAME"

ENVIRONMENT = (
    EnvVar(NODE_NAME_ENV, "none: mode node then needs node_name in the config",
           "the node this instance runs on, for the k8s_attributes stage's mode: node; set it "
           "from the downward API (valueFrom.fieldRef.fieldPath: spec.nodeName)"),
)


def node_name() -> Optional[str]:
    return os.environ.get(NODE_NAME_ENV) or None
