"""Pods as the enricher keeps them: compact records parsed from API objects.

A pod is ~1-2 KB here against ~10 KB of JSON: only what enrichment and the peer lookups need,
labels and annotations filtered by the configured selectors. Pure functions; the indexes over
these records live in :mod:`~otelguard.processors.k8s.cache`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from otelguard.otlp.messages import PyValue
from otelguard.processors.k8s.config import KeySelector
from otelguard.processors.k8s.source import Obj

Attrs = dict[str, PyValue]

# Pod labels that name the application, first present wins for service.name
# (docs/architecture.md#streams): the recommended label, then the two older conventions
# (kubectl create deployment and most charts set `app`; kube-system add-ons set `k8s-app`).
SERVICE_NAME_LABELS = ("app.kubernetes.io/name", "app", "k8s-app")

_ID_SCHEMES = ("containerd://", "cri-o://", "docker://", "crio://")

def strip_container_id(raw: str) -> str:
    """``containerd://<64hex>`` -> ``<64hex>`` (the form the agent reads from the cgroup path)."""
    for scheme in _ID_SCHEMES:
        if raw.startswith(scheme):
            return raw[len(scheme):]
    _, sep, rest = raw.partition("://")
    return rest if sep else raw


def parse_image(ref: str) -> tuple[str, tuple[str, ...]]:
    """An image reference -> (name, tags), as the Collector's k8s_attributes reports them.

    ``reg:5000/team/app:1.2@sha256:..`` -> (``reg:5000/team/app``, (``1.2``,)); no tag and no
    digest means Docker's implicit ``latest``; a digest without a tag gives no tag.
    """
    name, at, _digest = ref.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], (name[colon + 1:],)
    return name, (() if at else ("latest",))


def _capability(name: str) -> str:
    upper = name.upper()
    return upper if upper.startswith("CAP_") else "CAP_" + upper


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    name: str
    image_name: Optional[str]
    image_tags: tuple[str, ...]
    privileged: bool
    added_capabilities: tuple[str, ...]
    # "source:dest:mode:rdwr:propagation" per volume mount whose host source is known
    mounts: tuple[str, ...] = ()
    liveness_probe: tuple[str, ...] = ()  # the exec probe's command, () when none
    readiness_probe: tuple[str, ...] = ()


# The kubelet's directory of a pod volume (its default root dir), by volume source: the host
# path Falco's container.mount.source shows for volumes the kubelet materialises.
_KUBELET_PLUGINS = {"emptyDir": "empty-dir", "configMap": "configmap", "secret": "secret",
                    "projected": "projected", "downwardAPI": "downward-api"}
# CRI propagation of a volumeMount's mountPropagation, as the runtime reports it
_PROPAGATION = {"HostToContainer": "rslave", "Bidirectional": "rshared"}


def volume_sources(uid: str, spec: dict[str, Any]) -> dict[str, str]:
    """Volume name -> host source path: hostPath as given, the kubelet's volume directory for
    the volume types it materialises; volumes of other types (claims, CSI) are left out."""
    out: dict[str, str] = {}
    for v in spec.get("volumes") or []:
        name = str(v.get("name") or "")
        host = v.get("hostPath")
        if isinstance(host, dict) and host.get("path"):
            out[name] = str(host["path"])
            continue
        for key, plugin in _KUBELET_PLUGINS.items():
            if key in v:
                out[name] = f"/var/lib/kubelet/pods/{uid}/volumes/kubernetes.io~{plugin}/{name}"
                break
    return out


def container_mounts(container: dict[str, Any], sources: dict[str, str]) -> tuple[str, ...]:
    """The container's volume mounts in Falco's container.mounts item format."""
    out = []
    for m in container.get("volumeMounts") or []:
        source = sources.get(str(m.get("name") or ""))
        dest = m.get("mountPath")
        if source is None or not dest:
            continue
        if m.get("subPath"):
            source = f"{source}/{m['subPath']}"
        ro = bool(m.get("readOnly"))
        propagation = _PROPAGATION.get(str(m.get("mountPropagation") or ""), "rprivate")
        out.append(f"{source}:{dest}:{'ro' if ro else ''}:{'false' if ro else 'true'}:"
                   f"{propagation}")
    return tuple(out)


def exec_probe(container: dict[str, Any], kind: str) -> tuple[str, ...]:
    probe = container.get(kind) or {}
    command = (probe.get("exec") or {}).get("command") or []
    return tuple(str(c) for c in command)


@dataclass(slots=True)
class PodInfo:
    """What the enricher keeps of one pod. Replaced (not mutated) on every update, except for
    ``deleted_at`` and the memo."""

    uid: str
    name: str
    namespace: str
    node_name: str
    ips: tuple[str, ...]
    host_network: bool
    host_pid: bool
    service_account: str
    owner_kind: str
    owner_name: str
    app_name: str
    labels: dict[str, str]
    annotations: dict[str, str]
    containers: dict[str, ContainerInfo]
    container_ids: dict[str, str]  # container id -> container name
    deleted_at: Optional[float] = None
    memo: dict[str, tuple[int, Attrs]] = field(default_factory=dict)

    @property
    def privileged_any(self) -> bool:
        return any(c.privileged for c in self.containers.values())

    @property
    def added_capabilities_all(self) -> tuple[str, ...]:
        caps: set[str] = set()
        for c in self.containers.values():
            caps.update(c.added_capabilities)
        return tuple(sorted(caps))


def pod_from(obj: Obj, labels: KeySelector, annotations: KeySelector) -> Optional[PodInfo]:
    """The compact record of a pod object (None without a uid); only the labels and
    annotations the selectors keep."""
    meta = obj.get("metadata") or {}
    uid = meta.get("uid")
    if not uid:
        return None
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    pod_labels = meta.get("labels") or {}
    owner_kind, owner_name = controller_of(meta)
    containers: dict[str, ContainerInfo] = {}
    sources = volume_sources(str(uid), spec)
    for section in ("initContainers", "containers", "ephemeralContainers"):
        for c in spec.get(section) or []:
            name = str(c.get("name") or "")
            image = c.get("image")
            image_name, tags = parse_image(image) if image else (None, ())
            sc = c.get("securityContext") or {}
            caps = ((sc.get("capabilities") or {}).get("add")) or []
            containers[name] = ContainerInfo(
                name, image_name, tags, bool(sc.get("privileged")),
                tuple(sorted({_capability(str(x)) for x in caps})),
                container_mounts(c, sources), exec_probe(c, "livenessProbe"),
                exec_probe(c, "readinessProbe"),
            )
    ids: dict[str, str] = {}
    for section in ("initContainerStatuses", "containerStatuses",
                    "ephemeralContainerStatuses"):
        for cs in status.get(section) or []:
            name = str(cs.get("name") or "")
            previous = ((cs.get("lastState") or {}).get("terminated") or {}).get("containerID")
            if previous:
                ids[strip_container_id(str(previous))] = name
            if cs.get("containerID"):
                ids[strip_container_id(str(cs["containerID"]))] = name
    ips = tuple(str(p["ip"]) for p in status.get("podIPs") or [] if p.get("ip"))
    if not ips and status.get("podIP"):
        ips = (str(status["podIP"]),)
    return PodInfo(
        uid=str(uid),
        name=str(meta.get("name") or ""),
        namespace=str(meta.get("namespace") or ""),
        node_name=str(spec.get("nodeName") or ""),
        ips=ips,
        host_network=bool(spec.get("hostNetwork")),
        host_pid=bool(spec.get("hostPID")),
        service_account=str(spec.get("serviceAccountName") or spec.get("serviceAccount") or ""),
        owner_kind=owner_kind,
        owner_name=owner_name,
        app_name=next((str(pod_labels[k]) for k in SERVICE_NAME_LABELS if pod_labels.get(k)), ""),
        labels=labels.select(pod_labels),
        annotations=annotations.select(meta.get("annotations")),
        containers=containers,
        container_ids=ids,
    )

def nsname(obj: Obj) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def controller_of(meta: dict[str, Any]) -> tuple[str, str]:
    """(kind, name) of the controlling owner, ("", "") if none."""
    chosen = ("", "")
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller") or chosen == ("", ""):
            chosen = (str(ref.get("kind") or ""), str(ref.get("name") or ""))
    return chosen
