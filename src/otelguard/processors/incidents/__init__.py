"""``incidents``: detections correlated into incidents, each told as a story whose sentences
cite their evidence, with ATT&CK and CIS references and next steps (docs/incidents.md).
``config`` holds the Config, ``evidence`` the evidence model, ``incident`` an incident and its
severity, ``grouping`` which incident a detection joins, ``references`` ATT&CK/CIS data,
``templates`` the story, ``records`` the incident record, ``narrator`` and ``validator`` the
optional model, ``processor`` the stage, ``cli`` ``otelguard incidents``."""

from otelguard.processors.incidents.config import Config
from otelguard.processors.incidents.processor import TYPE_NAME, IncidentsStage, create

__all__ = ["TYPE_NAME", "Config", "IncidentsStage", "create"]
