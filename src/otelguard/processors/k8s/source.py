"""The enricher's ``K8sSource`` seam; the reflector itself lives in
:mod:`otelguard.kube.reflector` (the risk analysers watch namespaces and Services with it too)."""

from otelguard.kube.reflector import (
    ApiServerSource, InMemorySource, K8sSink, K8sSource, Kind, Obj, ReflectorStats,
)

__all__ = ["ApiServerSource", "InMemorySource", "K8sSink", "K8sSource", "Kind", "Obj",
           "ReflectorStats"]
