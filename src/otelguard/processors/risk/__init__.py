"""``risk``: runtime risk context (docs/risk.md). ``config`` holds the Config, ``processor`` the
stage that runs the analysers of :mod:`otelguard.risk` and reports their findings, ``records``
findings as OTLP records and snapshot JSON, ``metrics`` the gauges, ``cli`` ``otelguard risk``."""

from otelguard.processors.risk.config import Config
from otelguard.processors.risk.processor import TYPE_NAME, RiskStage, create

__all__ = ["TYPE_NAME", "Config", "RiskStage", "create"]
