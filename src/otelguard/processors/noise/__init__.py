"""``noise_control``: throttles repeated detections per distinct key; never drops a first-seen
or a CRITICAL one (docs/architecture.md#noise-control). ``config`` holds the Config, ``keys``
what makes detections distinct, ``records`` the records the stage writes, ``processor`` the
stage."""

from otelguard.processors.noise.config import Config
from otelguard.processors.noise.keys import workload_of
from otelguard.processors.noise.processor import TYPE_NAME, NoiseControl, create
from otelguard.processors.noise.records import KEY_SPACE_EXHAUSTED

__all__ = ["KEY_SPACE_EXHAUSTED", "TYPE_NAME", "Config", "NoiseControl", "create", "workload_of"]
