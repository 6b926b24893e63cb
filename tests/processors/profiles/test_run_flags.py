"""``otelguard run --profiles DIR [--learn-for DURATION]``: the profiles stage goes before
noise_control with that directory and window; bad flags are config errors."""

from __future__ import annotations

import pytest

from otelguard.config import ConfigError
from otelguard.config import parse_duration
from otelguard.processors.default_pipeline import apply_profiles, default_specs


def test_profiles_flag_adds_the_stage_before_noise_control() -> None:
    specs = apply_profiles(default_specs(None), "/var/lib/p", "2h")
    assert [s.type for s in specs][-2:] == ["profiles", "noise_control"]
    cfg = specs[-2].config
    assert cfg.directory == "/var/lib/p" and cfg.learn_seconds == 7200
    assert cfg.bucket_seconds == 900  # a window of 8 buckets at most 1 h long
    again = apply_profiles(specs, "/other", None)  # an existing stage is configured, not added
    assert [s.type for s in again].count("profiles") == 1
    assert again[-2].config.directory == "/other" and again[-2].config.learn_seconds == 7200


def test_bad_profile_flags_are_config_errors() -> None:
    assert apply_profiles(default_specs(None), None, None) == default_specs(None)
    with pytest.raises(ConfigError, match="--learn-for: needs --profiles DIR"):
        apply_profiles(default_specs(None), None, "1h")
    with pytest.raises(ConfigError, match="--learn-for"):
        apply_profiles(default_specs(None), "/p", "-5m")
    assert parse_duration("90m") == 5400 and parse_duration("300") == 300
