"""Kubernetes API access shared by the enricher, profiles and response (docs/architecture.md#layers).

Layer: imports only the bottom units (otlp, semconv, telemetry, config); ``processors`` and
``response`` build on it. Everything that talks to an API server gets its client from
:func:`api_client_from`, its errors from :mod:`otelguard.kube.errors`, and reaches otelguard's
own kinds (group ``otelguard.dev``) through :class:`CustomResources`.
"""

from otelguard.kube.access import api_client_from, own_namespace
from otelguard.kube.crd import install_crd, load_crd
from otelguard.kube.custom import API_VERSION, GROUP, VERSION, CustomResources, ObjectList, Watch
from otelguard.kube.errors import (
    AlreadyExists, ApiError, Conflict, Expired, Forbidden, Invalid, KubeAccessError, KubeError,
    NotFound,
)
from otelguard.kube.watcher import ObjectWatcher

__all__ = [
    "API_VERSION", "GROUP", "VERSION", "AlreadyExists", "ApiError", "Conflict",
    "CustomResources", "Expired", "Forbidden", "Invalid", "KubeAccessError", "KubeError",
    "NotFound", "ObjectList", "ObjectWatcher", "Watch", "api_client_from", "install_crd",
    "load_crd", "own_namespace",
]
