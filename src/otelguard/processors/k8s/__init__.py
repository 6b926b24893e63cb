"""``k8s_attributes``: Kubernetes enrichment of OTLP Resources and network peers.

config.py (Config), processor.py (K8sEnricher, create), cache.py (K8sCache), source.py
(K8sSource seam: ApiServerSource over the official client, InMemorySource for tests), peers.py.
Watches pods (one node's in ``mode: node``), ReplicaSets and Jobs (owners), namespaces, Services
and EndpointSlices; read-only RBAC in deploy/rbac/k8s-enricher.yaml.
"""

from otelguard.processors.k8s.config import Config
from otelguard.processors.k8s.processor import TYPE_NAME, K8sEnricher, create

__all__ = ["Config", "K8sEnricher", "TYPE_NAME", "create"]
