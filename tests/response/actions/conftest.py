"""The real etcd + kube-apiserver fixtures for the cluster actions' tests (one per session)."""

from tests.support.kube_world import admin, kube  # noqa: F401  (session fixtures)
