"""Every action a ``ResponsePolicy`` may name, and its parameters checked like config.

``ACTIONS`` maps the name used in policies (``isolate_pod``) to the action class. Each class
has a frozen ``Params`` dataclass whose defaults are the defaults of the policy; :func:`params`
builds it through the one config loader, so unknown keys and bad values are errors with a
dotted path (and file:line when the policy came from a YAML file)::

    p = params("delete_pod", {"min_healthy_replicas": 2}, path="policies[0].actions[1].params")

An action's ``plan`` takes the same mapping (``Change.params`` stores it with every default
filled in, as JSON) so a request replayed later applies exactly what was approved.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from otelguard.config import ConfigError, ConfigIssue, from_mapping
from otelguard.response.actions import kube, node, workload
from otelguard.response.actions.base import params_json as as_json

ACTIONS: Mapping[str, type[Any]] = {cls.name: cls for cls in (
    kube.LabelPod, kube.IsolatePod, kube.CordonNode, workload.DeletePod,
    workload.ScaleToZero, workload.RollbackDeployment,
    node.FreezeContainer, node.KillProcess, node.BlockPeer,
)}


def action_class(name: str, path: str = "") -> type[Any]:
    """The class registered as ``name``; a ConfigError naming the known ones otherwise."""
    try:
        return ACTIONS[name]
    except KeyError:
        known = ", ".join(sorted(ACTIONS))
        raise ConfigError([ConfigIssue(path, f"unknown action {name!r} (known: {known})")]) from None


def params(name: str, raw: Optional[Mapping[str, Any]], *, path: str = "",
           source: Optional[str] = None, line: Optional[int] = None) -> Any:
    """``raw`` (None = all defaults) built into action ``name``'s frozen ``Params``; raises
    ConfigError with every problem (unknown key, wrong type, bad value) at its dotted path."""
    cls = action_class(name, path)
    data = raw if raw is None or isinstance(raw, dict) else dict(raw)  # keeps a LocatedDict's lines
    return from_mapping(cls.Params, data, path=path, source=source, line=line)
