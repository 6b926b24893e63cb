"""A real etcd + kube-apiserver for the e2e tests of this package (one per session)."""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from tests.support.kube import KubeCluster, start_cluster
from tests.support.prerequisites import require_kube_apiserver


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    require_kube_apiserver()
    cluster = start_cluster(tmp_path_factory.mktemp("kube"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def admin(kube: KubeCluster) -> Any:
    """An ApiClient with the admin token (system:masters)."""
    from kubernetes import config

    return config.new_client_from_config(config_file=str(kube.kubeconfig))
