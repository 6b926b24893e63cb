"""Falco's fields over OTel records: the one entry point the compiler, outputs and state use.

One module per Falco field class, as libsinsp splits its filter checks: :mod:`.evt`,
:mod:`.proc` (with thread.* and the ancestors), :mod:`.user` (user.* and group.*), :mod:`.fd`,
:mod:`.container`, :mod:`.k8s`, and :mod:`.extensions` (otelguard's state-derived fields). Each
registers its fields in :data:`FIELDS` (:mod:`.registry`) on import; they are imported here in
that order, which is the order of the field table in docs/falco-rules-coverage.md. Records are
read through :class:`EventView` (:mod:`.view`), from the flat record view (:mod:`.flat`)
where the native extension built one.
"""

from otelguard.processors.detection.fields.registry import (
    FIELDS, INVALID, UNAVAILABLE, UNKNOWN, AttrField, Extractor, FieldProblem, FieldSpec,
    FieldType, ResourceField, as_int, resolve,
)
from otelguard.processors.detection.fields.view import AttrLayouts, EventView
from otelguard.processors.detection.fields.flat import FlatRecords
from otelguard.processors.detection.fields import evt, proc, user, fd, container, k8s  # noqa: F401
from otelguard.processors.detection.fields import extensions  # noqa: F401  (registered last)
from otelguard.processors.detection.fields.evt import event_type
from otelguard.processors.detection.fields.extensions import EXTENSION_FIELDS

__all__ = [
    "EXTENSION_FIELDS", "FIELDS", "INVALID", "UNAVAILABLE", "UNKNOWN", "AttrField",
    "AttrLayouts", "EventView", "Extractor", "FlatRecords", "FieldProblem", "FieldSpec", "FieldType",
    "ResourceField", "as_int", "event_type", "resolve",
]
