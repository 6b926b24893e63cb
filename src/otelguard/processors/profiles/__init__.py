"""``profiles``: per-workload behaviour profiles, learned with poisoning resistance, reviewed
and approved as YAML files, enforced as "unexpected behaviour" detections (docs/profiles.md).
``config`` holds the Config, ``workload`` what a workload is, ``observe`` what a record says a
workload did, ``model`` a profile's lifecycle, ``matching`` its entries as patterns,
``document`` the YAML file, ``store`` the directory, ``objects`` and ``cluster`` profiles as
WorkloadProfile objects on the API server, ``records`` the detections, ``processor`` the stage,
``cli`` and ``cluster_cli`` ``otelguard profile``."""

from otelguard.processors.profiles.config import Config
from otelguard.processors.profiles.processor import TYPE_NAME, ProfilesStage, create

__all__ = ["TYPE_NAME", "Config", "ProfilesStage", "create"]
