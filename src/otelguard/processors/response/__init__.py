"""``response``: detections and incidents matched to response policies; requests proposed,
approved ones executed, the audit chain shipped (docs/response.md). ``config`` holds the
Config, ``records`` what a policy matches and an action targets, ``processor`` the stage,
``cli`` ``otelguard respond`` and ``otelguard audit verify``."""

from otelguard.processors.response.config import Config
from otelguard.processors.response.processor import TYPE_NAME, ResponseStage, create

__all__ = ["TYPE_NAME", "Config", "ResponseStage", "create"]
