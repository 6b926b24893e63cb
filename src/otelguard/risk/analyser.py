"""The contract every risk analyser keeps (docs/architecture.md#runtime-risk).

An analyser is a class in its own module under ``otelguard.risk`` with:

- ``name`` (the ``otelguard.risk.analyser`` value), ``events``, the event names it reads (the
  stage hands it only those), and ``fields``, the record attribute keys it reads (only those
  are decoded into the observation: decoding every attribute of every record costs more than
  parsing the request), and optionally ``fields_by_event``, those keys narrowed per event name
  (the stage's positional reader proves each wanted key a record lacks absent from its wire
  bytes, so a key no record of that event carries costs a serialisation per record);
- ``observe(observation)``: called by the stage's ``process`` for every matching record, under
  the stage's lock; must not do I/O (queue work for a thread started in ``start()``) and must
  keep its memory bounded per workload and in total, counting what it cannot keep through the
  ``dropped`` callback it is given;
- ``findings(workload)``: the current verdicts of one workload, called by the stage's report
  thread (may do I/O; thread-safe against ``observe``);
- ``workloads()``: the workloads it holds state for; ``forget(workload)`` drops one;
- ``start()`` / ``shutdown()``: its threads, if any.

It is built by ``create(config, dropped)`` in its module, ``config`` being the ``risk`` stage's
whole Config (each analyser reads its own section) and ``dropped(reason, n)`` the counter of
what it could not keep; :mod:`otelguard.risk.analysers` lists the modules.
"""

from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

from otelguard.risk.model import Finding, Observation

Dropped = Callable[[str, int], None]  # (reason, count) -> counted in otelguard_risk_dropped


@runtime_checkable
class Analyser(Protocol):
    name: str
    events: frozenset[str]
    fields: frozenset[str]

    def start(self) -> None: ...

    def observe(self, observation: Observation) -> None: ...

    def findings(self, workload: str) -> list[Finding]: ...

    def workloads(self) -> list[str]: ...

    def forget(self, workload: str) -> None: ...

    def shutdown(self) -> None: ...
