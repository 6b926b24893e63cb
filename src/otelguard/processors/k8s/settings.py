"""Environment variables the Kubernetes enricher reads (one settings module per package, each variable documented).

``OTELGUARD_K8S_NODE_NAME``
    The node this instance runs on, for ``mode: node``. Set it from the downward API
    (``valueFrom.fieldRef.fieldPath: spec.nodeName``) in the DaemonSet.
"""

from __future__ import annotations

import os
from typing import Optional

NODE_NAME_ENV = "OTELGUARD_K8S_NODE_NAME"


def node_name() -> Optional[str]:
    return os.environ.get(NODE_NAME_ENV) or None
