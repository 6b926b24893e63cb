"""How otelguard reaches an API server: one ``ApiClient`` per caller, never the global default.

The k8s enricher, the profiles store, response actions and the CLI all build their client here,
so a kubeconfig flag, an in-cluster service account and the default ``~/.kube/config`` behave the
same everywhere (docs/architecture.md#layers).
"""

from __future__ import annotations

from typing import Any, Callable

from otelguard.kube.errors import KubeAccessError


def api_client_from(kubeconfig: str = "", context: str = "") -> Any:
    """A ``kubernetes.client.ApiClient``: from ``kubeconfig`` if given, else in-cluster if we run in
    a pod, else the default kubeconfig. Never touches the client's global default configuration.
    Raises :class:`KubeAccessError` naming what was tried."""
    from kubernetes import client, config

    # The loaders are untyped in the client; name their types once here.
    from_file: Callable[..., Any] = config.new_client_from_config
    incluster: Callable[..., None] = config.load_incluster_config
    try:
        if kubeconfig:
            return from_file(config_file=kubeconfig, context=context or None)
        try:
            cfg = client.Configuration()
            incluster(client_configuration=cfg)
            return client.ApiClient(configuration=cfg)
        except config.ConfigException:
            return from_file(context=context or None)
    except (config.ConfigException, OSError, ValueError, TypeError) as exc:
        tried = f"kubeconfig {kubeconfig!r}" if kubeconfig else (
            "the in-cluster service account and the default kubeconfig")
        raise KubeAccessError(
            f"cannot configure Kubernetes API access from {tried}"
            f"{f' (context {context!r})' if context else ''}: {type(exc).__name__}: {exc}"
        ) from exc


SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def own_namespace(default: str = "") -> str:
    """The namespace of the pod we run in (its service account's mount), else ``default``."""
    try:
        with open(SERVICE_ACCOUNT_NAMESPACE) as f:
            return f.read().strip() or default
    except OSError:
        return default
