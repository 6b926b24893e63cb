"""Fixtures for sensor tests (tests/support/sensor.py): the session Sensor and run_in_container."""

from tests.support.sensor import run_in_container, sensor  # noqa: F401  (fixtures)
