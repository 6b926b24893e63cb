"""The diff a human approves: a unified diff of an object's YAML before and after the change.

Every action renders its :class:`~otelguard.response.actions.base.Change` ``diff`` here so all
of them read alike: ``--- a/<kind>/<namespace>/<name>`` / ``+++ b/...`` with 3 lines of context,
``/dev/null`` on the side of an object that does not exist (created or deleted). Keys are sorted
so the same object always renders the same text (a dry run and the approved request match).
"""

from __future__ import annotations

import difflib
from typing import Any, Mapping, Optional, Sequence

import yaml

# Fields that change on every write and say nothing to an approver.
_NOISE = ("managedFields", "resourceVersion", "generation", "creationTimestamp", "selfLink")


def as_yaml(obj: Optional[Mapping[str, Any]]) -> list[str]:
    """``obj`` as YAML lines (empty for None), sorted keys, block style."""
    if obj is None:
        return []
    text = yaml.safe_dump(dict(obj), sort_keys=True, default_flow_style=False, width=100)
    return text.splitlines()


def unified(before: Sequence[str], after: Sequence[str], name: str,
            created: bool = False, deleted: bool = False) -> str:
    """A unified diff of two line lists; ``name`` labels both sides (``a/``/``b/`` prefixed)."""
    lines = difflib.unified_diff(
        list(before), list(after),
        fromfile="/dev/null" if created else f"a/{name}",
        tofile="/dev/null" if deleted else f"b/{name}",
        lineterm="", n=3,
    )
    return "\n".join(lines) + "\n"


def object_diff(before: Optional[Mapping[str, Any]], after: Optional[Mapping[str, Any]],
                name: str) -> str:
    """Unified diff of an object's YAML; None on one side means created or deleted."""
    return unified(as_yaml(before), as_yaml(after), name,
                   created=before is None, deleted=after is None)


def readable(obj: Mapping[str, Any], keep_status: bool = False) -> dict[str, Any]:
    """An API object (as JSON data) without the fields that change on every write; ``status``
    only with ``keep_status`` (most actions change the spec or metadata, not the status)."""
    out = {k: v for k, v in obj.items() if keep_status or k != "status"}
    meta = {k: v for k, v in dict(out.get("metadata") or {}).items() if k not in _NOISE}
    if meta:
        out["metadata"] = meta
    return out
