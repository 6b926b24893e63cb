"""Installing a CustomResourceDefinition from its YAML file, and waiting until it is served.

The Helm chart ships the same files under ``crds/`` (Helm installs those before anything else and
never deletes or upgrades them); this is the path without Helm (``otelguard profile install-crd``)
and the tests'. A CRD that exists is replaced with the file's version (spec changes such as new
printer columns apply); a create or update is usable only after the API server reports the
``Established`` condition, which we wait for.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Union

import yaml

from otelguard.kube.errors import ApiError, KubeError, NotFound, wrap
from otelguard.kube.stream import Obj


def load_crd(path: Union[str, Path]) -> Obj:
    """The one CustomResourceDefinition document in ``path``; ValueError if it is not one."""
    docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
    if len(docs) != 1 or not isinstance(docs[0], dict) or \
            docs[0].get("kind") != "CustomResourceDefinition":
        raise ValueError(f"{path}: expected exactly one CustomResourceDefinition document")
    return docs[0]


def established(crd: Obj) -> bool:
    conditions = (crd.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)


def install_crd(api_client: Any, crd: Union[str, Path, Obj], timeout: float = 30.0) -> Obj:
    """Create or replace the CRD and wait until it is Established; the stored CRD. Raises
    :class:`~otelguard.kube.errors.ApiError` (e.g. Forbidden: installing CRDs is a cluster-admin
    action) or :class:`~otelguard.kube.errors.KubeError` on timeout."""
    from kubernetes import client

    body = crd if isinstance(crd, dict) else load_crd(crd)
    name = str((body.get("metadata") or {}).get("name") or "")
    api = client.ApiextensionsV1Api(api_client)
    sanitize = api_client.sanitize_for_serialization

    def read() -> Obj:
        try:
            got: Obj = sanitize(api.read_custom_resource_definition(name))
        except Exception as exc:
            raise wrap(exc, f"get customresourcedefinitions {name}") from exc
        return got

    try:
        current = read()
    except NotFound:
        current = None
    model = client.V1CustomResourceDefinition.from_dict(
        body if current is None else
        {**body, "metadata": {**body.get("metadata", {}),
                              "resourceVersion": current["metadata"]["resourceVersion"]}})
    if model is None:
        raise ValueError(f"customresourcedefinition {name}: empty document")
    try:
        if current is None:
            api.create_custom_resource_definition(model)
        else:
            api.replace_custom_resource_definition(name, model)
    except Exception as exc:
        raise wrap(exc, f"{'create' if current is None else 'replace'} "
                        f"customresourcedefinitions {name}") from exc
    deadline = time.monotonic() + timeout
    while True:
        try:
            stored = read()
        except ApiError:
            stored = {}
        if established(stored):
            return stored
        if time.monotonic() > deadline:
            raise KubeError(f"customresourcedefinition {name} not Established after "
                            f"{timeout:.0f}s: {(stored.get('status') or {}).get('conditions')}")
        time.sleep(0.1)
