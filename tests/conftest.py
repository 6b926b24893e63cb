"""Shared test setup: markers for tests that need root + the kernel, or the Go-built stack."""

from __future__ import annotations

import os

import pytest

from tests.support.prerequisites import in_ci

# The session fixtures (one etcd + kube-apiserver, one Sensor, one node, one stack), defined once
# for the whole run: importing a fixture into a second module would define a second session
# fixture of the same name, and each would start its own (test_fixtures.py guards this).
pytest_plugins = [
    "tests.support.kube_world",
    "tests.support.node",
    "tests.support.sensor",
    "tests.support.stack",
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() != 0 and not in_ci():  # in CI they run, and fail without root
        skip = pytest.mark.skip(reason="needs root and the real kernel (run the tests as root)")
        for item in items:
            if "kernel" in item.keywords:
                item.add_marker(skip)
