"""container.*: the container of the record's process, from its Resource (per-Resource values,
read once per ResourceLogs by the engine)."""

from __future__ import annotations

from typing import Any, Callable, Optional

from otelguard import semconv as S
from otelguard.processors.detection.fields.registry import (
    Extractor, FieldType as T, define, unavailable,
)
from otelguard.processors.detection.fields.view import EventView
from otelguard.processors.detection.patterns import glob_matcher

# Falco's container.id / container.name are spelled like OTel attribute keys; they are
# rule-language names, not keys, so they are built from the class prefix and never confused
# with the semconv constants they are mapped to.
_CONTAINER = "container."


# A Resource that neither says "host process" (the agent's mark) nor names a container: the
# container's metadata did not resolve. It is not the host: `not container` must not be true on
# it by default, so container.id is this value (!= host) and the other container.* are missing.
UNKNOWN_CONTAINER = "unknown"


def _container_full_id(ev: EventView, _arg: Optional[str]) -> str:
    if ev.res.get(S.HOST_PROCESS) is True:
        return "host"
    cid = ev.res.get(S.CONTAINER_ID)
    return cid if isinstance(cid, str) and cid else UNKNOWN_CONTAINER


def _container_id(ev: EventView, _arg: Optional[str]) -> str:
    return _container_full_id(ev, None)[:12]


def _split_image(ref: str) -> tuple[str, Optional[str]]:
    ref = ref.split("@", 1)[0]
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        return ref[:colon], ref[colon + 1:]
    return ref, None


def _image_repo(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    v = ev.res.get(S.CONTAINER_IMAGE_NAME)
    return _split_image(v)[0] if isinstance(v, str) and v else None


def _image_tag(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    tags = ev.res.get(S.CONTAINER_IMAGE_TAGS)
    if isinstance(tags, list) and tags:
        return str(tags[0])
    v = ev.res.get(S.CONTAINER_IMAGE_NAME)
    return _split_image(v)[1] if isinstance(v, str) and v else None


def _image(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    repo = _image_repo(ev, None)
    if repo is None:
        return None
    tag = _image_tag(ev, None)
    return f"{repo}:{tag}" if tag else repo


def _container_name(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    cid = _container_id(ev, None)
    if cid == "host":
        return "host"
    if cid == UNKNOWN_CONTAINER:
        return None
    v = ev.res.get(S.CONTAINER_NAME) or ev.res.get(S.K8S_CONTAINER_NAME)
    return v if isinstance(v, str) else None


def _privileged(ev: EventView, _arg: Optional[str]) -> Optional[bool]:
    v = ev.res.get(S.K8S_POD_PRIVILEGED)
    return v if isinstance(v, bool) else None


# container.mount*: the pod spec's volume mounts the k8s enricher puts on the Resource, in
# Falco's "source:dest:mode:rdwr:propagation" form. Falco's null value "N/A" stands for "no such
# mount" and for mounts not known (no pod spec), so `not container.mount.dest[/proc*] in
# ("<NA>","N/A")` is true only on a mount that was seen.
_NULL = "N/A"
_MOUNT_PARTS = {"mount": -1, "source": 0, "dest": 1, "mode": 2, "rdwr": 3, "propagation": 4}


def _mounts_of(ev: EventView) -> Optional[list[list[str]]]:
    v = ev.res.get(S.K8S_CONTAINER_MOUNTS)
    if not isinstance(v, list):
        return None
    return [str(m).split(":", 4) for m in v if str(m).count(":") >= 4]


_GLOBS: dict[str, Callable[[str], bool]] = {}


def _glob(pattern: str) -> Callable[[str], bool]:
    m = _GLOBS.get(pattern)
    if m is None:
        m = _GLOBS[pattern] = glob_matcher(pattern)
    return m


def _mount_field(part: str) -> Extractor:
    """container.mount[...] / .source / .dest / .mode / .rdwr / .propagation: by index, or by
    a glob over the mount's source (over its destination for .source), as libs looks them up."""
    index = _MOUNT_PARTS[part]
    key = 1 if part == "source" else 0

    def get(ev: EventView, arg: Optional[str]) -> Any:
        if _container_id(ev, None) == "host":
            return None
        mounts = _mounts_of(ev) or []
        found = None
        if arg is not None and arg.isdigit():
            found = mounts[int(arg)] if int(arg) < len(mounts) else None
        elif arg is not None:
            match = _glob(arg)
            found = next((m for m in mounts if match(m[key])), None)
        if found is None:
            return "none" if part == "mount" else _NULL
        return ":".join(found) if index < 0 else found[index]
    return get


def _container_mounts(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    if _container_id(ev, None) == "host":
        return None
    mounts = _mounts_of(ev)
    return None if mounts is None else ",".join(":".join(m) for m in mounts)


define(_CONTAINER + "id", T.STR, f"{S.CONTAINER_ID} (12 chars); 'host' when the Resource is marked "
       f"{S.HOST_PROCESS}; '{UNKNOWN_CONTAINER}' when neither (metadata did not resolve)",
       _container_id)
define("container.full_id", T.STR, f"{S.CONTAINER_ID}; 'host' / '{UNKNOWN_CONTAINER}' as "
       "container.id", _container_full_id)
define(_CONTAINER + "name", T.STR, f"{S.CONTAINER_NAME}, else {S.K8S_CONTAINER_NAME}",
       _container_name)
define("container.image.repository", T.STR, f"{S.CONTAINER_IMAGE_NAME} without tag", _image_repo)
define("container.image.tag", T.STR, f"{S.CONTAINER_IMAGE_TAGS}[0], else the name's tag",
       _image_tag)
define("container.image", T.STR, "repository:tag", _image)
define("container.privileged", T.BOOL, S.K8S_POD_PRIVILEGED, _privileged)
unavailable("container.start_ts", T.NUM, "container start time is not known to the processor")
define("container.mounts", T.STR, f"{S.K8S_CONTAINER_MOUNTS} joined by ','",
       _container_mounts, (S.K8S_CONTAINER_MOUNTS,))
for _part in _MOUNT_PARTS:
    _name = "container.mount" if _part == "mount" else f"container.mount.{_part}"
    define(_name, T.STR, f"{S.K8S_CONTAINER_MOUNTS} by [index] or [glob of the "
           f"{'destination' if _part == 'source' else 'source'}]; 'N/A' when none matches or "
           "the pod spec is unknown" + ("" if _part != "mount" else " ('none' for container.mount)"),
           _mount_field(_part), (S.K8S_CONTAINER_MOUNTS,), arg="required")
unavailable("container.image.id", T.STR, "image digests are not known to the processor")
