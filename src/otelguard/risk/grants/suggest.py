"""Least-privilege suggestions: a strategic-merge patch of the workload's controller per finding
(``kubectl patch --type strategic``), as YAML with a comment naming the target."""

from __future__ import annotations

import json
from typing import Any, Optional

from otelguard.risk.grants.ledger import (
    CAPABILITY, PRIVILEGED, TOKEN, UNWRITTEN, Ledger, Owner, Verdict,
)


def k8s_cap(cap: str) -> str:
    """``CAP_NET_ADMIN`` -> ``NET_ADMIN`` (the pod spec's spelling)."""
    return cap[4:] if cap.startswith("CAP_") else cap


def least_capabilities(led: Ledger) -> dict[str, Any]:
    """The capabilities stanza that keeps exactly what was used (``add: null`` deletes the
    spec's list in a strategic merge when nothing was used)."""
    used = sorted(k8s_cap(c) for c in led.used_caps)
    return {"drop": ["ALL"], "add": used or None}


def _pod_spec_path(kind: str) -> list[str]:
    if kind == "Pod" or not kind:
        return ["spec"]
    if kind == "CronJob":
        return ["spec", "jobTemplate", "spec", "template", "spec"]
    return ["spec", "template", "spec"]


def patch(owner: Owner, pod_spec: dict[str, Any], container: Optional[dict[str, Any]]) -> dict[str, Any]:
    """A strategic-merge patch of ``owner`` setting ``pod_spec`` fields and, when given, the
    container's (merged by name)."""
    spec = dict(pod_spec)
    if container is not None:
        spec["containers"] = [{"name": owner.container, **container}]
    body: dict[str, Any] = spec
    for key in reversed(_pod_spec_path(owner.kind)):
        body = {key: body}
    return body


def suggestion(v: Verdict, led: Ledger) -> str:
    """The least-privilege change for one finding, as YAML with a comment naming the target."""
    o = led.grants.owner
    grant = v.subject
    if v.kind == CAPABILITY:
        body = patch(o, {}, {"securityContext": {"capabilities": least_capabilities(led)}})
        note = f"drop {grant}: keep only the capabilities used"
    elif v.kind == PRIVILEGED:
        body = patch(o, {}, {"securityContext": {
            "privileged": False, "allowPrivilegeEscalation": False,
            "capabilities": least_capabilities(led)}})
        note = "privileged: false, with only the capabilities used"
    elif v.kind == TOKEN:
        body = patch(o, {"automountServiceAccountToken": False}, None)
        note = "do not mount the service-account token"
    elif v.state == UNWRITTEN:
        body = patch(o, {}, {"volumeMounts": [{"mountPath": grant, "readOnly": True}]})
        note = f"mount {grant} read-only"
    else:  # an unused hostPath
        body = patch(o, {}, {"volumeMounts": [{"mountPath": grant, "$patch": "delete"}]})
        note = f"remove the mount at {grant} (and its hostPath volume if nothing else uses it)"
    target = f"{o.kind or 'Pod'} {o.namespace}/{o.name}"
    return (f"# {target}, container {o.container}: {note}\n"
            f"# kubectl -n {o.namespace} patch {(o.kind or 'Pod').lower()} {o.name} "
            f"--type strategic --patch-file <this file>\n" + _yaml(body))


def _yaml(value: Any, indent: int = 0) -> str:
    """Block YAML of plain dicts/lists/scalars (JSON scalars are valid YAML)."""
    pad = "  " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, (dict, list)) and v:
                lines.append(f"{pad}{_scalar(k)}:")
                lines.append(_yaml(v, indent + 1).rstrip("\n"))
            else:
                lines.append(f"{pad}{_scalar(k)}: {_scalar(v)}")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict) and item:
                first, *rest = _yaml(item, indent + 1).rstrip("\n").split("\n")
                lines.append(f"{pad}- {first.lstrip()}")
                lines.extend(rest)
            else:
                lines.append(f"{pad}- {_scalar(item)}")
    return "\n".join(lines) + "\n"


def _scalar(v: Any) -> str:
    if isinstance(v, str) and v and all(c.isalnum() or c in "_-./" for c in v) and \
            v.lower() not in ("true", "false", "null", "yes", "no", "on", "off", "~"):
        return v
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return json.dumps(v)
