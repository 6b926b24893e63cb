"""``noise_control`` config; its defaults are the default config.

Semantics: docs/architecture.md#noise-control.
"""

from __future__ import annotations

from dataclasses import dataclass

from otelguard import semconv
from otelguard.config import Checks


@dataclass(frozen=True)
class Config:
    """Defaults: per distinct detection per minute 3 pass one by one, the rest are throttled."""

    window_seconds: float = 60.0  # a key's window, from its first sighting
    # Record attributes that, with the rule and workload, make a detection distinct. A detection
    # whose values were not seen in the key's window is first-seen and always passes.
    key_fields: tuple[str, ...] = (
        semconv.PROCESS_EXECUTABLE_PATH, semconv.PROCESS_COMMAND_LINE, semconv.FILE_PATH,
        semconv.NETWORK_PEER_ADDRESS, semconv.NETWORK_PEER_PORT, semconv.DNS_QUESTION_NAME,
        semconv.ANOMALY_VALUE,  # profile deviations: one key per deviating value
    )
    burst: int = 3  # sightings of one key per window that pass one by one; the rest are throttled
    max_keys: int = 10_000  # keys held at once; when full the oldest is closed early (a detection)
    # log.record.uid of the latest detections that passed or were counted, so a retried one
    # passes again or is not counted twice (kept in the service's journal across restarts)
    remembered_uids: int = 65_536

    def __post_init__(self) -> None:
        checks = Checks()
        checks.above(self, 0, "window_seconds")
        checks.at_least(self, 1, "burst", "max_keys", "remembered_uids")
        checks.done()
