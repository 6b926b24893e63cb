"""Environment settings of the exporter and the node identity it stamps on every Resource.

Read once per process (the node does not change under a running agent); the variables are
declared in :data:`ENVIRONMENT` (published in docs/configuration.md).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Mapping, Optional

from otelguard.config import EnvVar

MACHINE_ID_PATH = "/etc/machine-id"

ENVIRONMENT = (
    EnvVar("OTELGUARD_NODE_NAME", "the host name",
           "k8s.node.name of the node identity stamped on every Resource"),
    EnvVar("OTELGUARD_HOST_ID", "the content of /etc/machine-id (empty if absent)",
           "host.id on every Resource"),
)


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    node_name: str
    host_name: str
    host_id: str


def node_identity(env: Optional[Mapping[str, str]] = None,
                  machine_id_path: str = MACHINE_ID_PATH) -> NodeIdentity:
    env = os.environ if env is None else env
    host_name = socket.gethostname()
    host_id = env.get("OTELGUARD_HOST_ID", "")
    if not host_id:
        try:
            with open(machine_id_path, encoding="ascii") as fh:
                host_id = fh.read().strip()
        except OSError:
            host_id = ""
    return NodeIdentity(
        node_name=env.get("OTELGUARD_NODE_NAME", "") or host_name,
        host_name=host_name,
        host_id=host_id,
    )
