"""The package's shop (workloads.py): learned over two buckets with the attacker's steps of
test_poisoning.py inside the windows, then approved as a reviewer would, once for all tests.

Package scope, not session: the shop's LivePipeline drains the session sensor on a thread, and
kept past this package it took records from every later kernel test (each record goes to one
drain; the sensor now refuses a second concurrent consumer, ConsumerConflict)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from otelguard.ebpf.sensor import Sensor
from tests.profiles_kernel.learning import learn_and_approve
from tests.profiles_kernel.workloads import Shop


@pytest.fixture(scope="package")
def shop(sensor: Sensor) -> Iterator[Shop]:
    with tempfile.TemporaryDirectory(prefix="og-profiles-", dir="/var/tmp") as base:
        s = Shop(sensor, Path(base))
        s.start()
        try:
            learn_and_approve(s)
            yield s
        finally:
            s.stop()
