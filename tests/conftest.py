"""Shared test setup: markers for tests that need root + the kernel, or the Go-built stack."""

from __future__ import annotations

import os

import pytest

from tests.support.prerequisites import in_ci


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() != 0 and not in_ci():  # in CI they run, and fail without root
        skip = pytest.mark.skip(reason="needs root and the real kernel (run the tests as root)")
        for item in items:
            if "kernel" in item.keywords:
                item.add_marker(skip)
