"""The processor service's environment variables: both numbers checked, both problems reported."""

from __future__ import annotations

import pytest

from otelguard.processors import settings
from otelguard.processors.errors import ConfigError


def test_defaults_and_values() -> None:
    assert settings.read({}) == settings.Settings()
    got = settings.read({"OTELGUARD_PROCESSOR_FORWARD_THREADS": "3",
                         "OTELGUARD_PROCESSOR_GRACE_SECONDS": "0",
                         "OTELGUARD_ALLOW_PURE_PYTHON_PROTOBUF": "1"})
    assert got == settings.Settings(True, 3, 0.0)


def test_every_bad_variable_is_reported() -> None:
    with pytest.raises(ConfigError) as info:
        settings.read({"OTELGUARD_PROCESSOR_FORWARD_THREADS": "0",
                       "OTELGUARD_PROCESSOR_GRACE_SECONDS": "soon"})
    assert info.value.messages == [
        "OTELGUARD_PROCESSOR_FORWARD_THREADS: expected a positive integer, got '0'",
        "OTELGUARD_PROCESSOR_GRACE_SECONDS: expected a number >= 0, got 'soon'"]
    with pytest.raises(ConfigError, match="FORWARD_THREADS: expected a positive integer, got '2.5'"):
        settings.read({"OTELGUARD_PROCESSOR_FORWARD_THREADS": "2.5"})
