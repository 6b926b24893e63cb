"""otelguard extensions: fields Falco lacks, derived from the falco_rules stage's bounded
per-process / per-container state (:mod:`otelguard.processors.detection.state`).

Registered last, after Falco's own classes."""

from __future__ import annotations

from typing import Any, Optional

from otelguard.processors.detection.fields.registry import Extractor, FieldType as T, define
from otelguard.processors.detection.fields.view import EventView


def _state(name: str) -> Extractor:
    def get(ev: EventView, _arg: Optional[str]) -> Any:
        st = ev.state
        return None if st is None else st.field(name, ev)
    return get


define("proc.stdin_is_socket", T.BOOL, "stage state: a socket was dup'ed onto fd 0 of this "
       "process (or its parent before the fork)", _state("stdin_is_socket"))
define("proc.stdout_is_socket", T.BOOL, "stage state: a socket was dup'ed onto fd 1 or 2",
       _state("stdout_is_socket"))
define("proc.exe_written_recently", T.BOOL, "stage state: proc.exepath was opened for writing, "
       "renamed or chmod'ed in the same container within the configured window",
       _state("exe_written_recently"))

EXTENSION_FIELDS = frozenset({"proc.stdin_is_socket", "proc.stdout_is_socket",
                              "proc.exe_written_recently"})
