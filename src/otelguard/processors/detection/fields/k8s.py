"""k8s.*: the pod, namespace, workload and node of the record's process, from its Resource."""

from __future__ import annotations

from typing import Optional

from otelguard import semconv as S
from otelguard.processors.detection.fields.registry import (
    FieldType as T, ResourceField, define,
)
from otelguard.processors.detection.fields.view import EventView

# Falco's k8s.pod.name & co are spelled like OTel attribute keys; they are rule-language names,
# not keys, so they are built from the class prefix (see container.py).
_K8S = "k8s."


def _pod_labels(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    labels = sorted((k[len(S.K8S_POD_LABEL_PREFIX):], v) for k, v in ev.res.items()
                    if k.startswith(S.K8S_POD_LABEL_PREFIX))
    return ", ".join(f"{k}:{v}" for k, v in labels) if labels else None


def _pod_label(ev: EventView, arg: Optional[str]) -> Optional[str]:
    v = ev.res.get(S.K8S_POD_LABEL_PREFIX + (arg or ""))
    return None if v is None else str(v)


def _workload(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    for key in (S.K8S_DEPLOYMENT_NAME, S.K8S_STATEFULSET_NAME, S.K8S_DAEMONSET_NAME,
                S.K8S_CRONJOB_NAME, S.K8S_JOB_NAME, S.K8S_REPLICASET_NAME):
        v = ev.res.get(key)
        if isinstance(v, str) and v:
            return v
    return None


define("k8s.ns.name", T.STR, S.K8S_NAMESPACE_NAME, ResourceField(S.K8S_NAMESPACE_NAME))
define(_K8S + "pod.name", T.STR, S.K8S_POD_NAME, ResourceField(S.K8S_POD_NAME))
define(_K8S + "pod.uid", T.STR, S.K8S_POD_UID, ResourceField(S.K8S_POD_UID))
define(_K8S + "pod.ip", T.STR, S.K8S_POD_IP, ResourceField(S.K8S_POD_IP))
define("k8s.pod.labels", T.STR, f"{S.K8S_POD_LABEL_PREFIX}* as 'k:v, k:v'", _pod_labels)
define("k8s.pod.label", T.STR, f"{S.K8S_POD_LABEL_PREFIX}<key>", _pod_label, arg="required")
define("k8s.workload.name", T.STR, "deployment/statefulset/daemonset/cronjob/job name", _workload)
define(_K8S + "node.name", T.STR, S.K8S_NODE_NAME, ResourceField(S.K8S_NODE_NAME))
