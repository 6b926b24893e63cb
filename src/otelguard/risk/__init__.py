"""Runtime risk context (docs/risk.md): what a workload really uses, joined with what it was
given or what is known about it.

The unit is analysers over OTLP facts, below ``processors`` in the layer order
(docs/architecture.md#layers): ``model`` holds what an analyser sees (:class:`Observation`) and
says (:class:`Finding`), ``analyser`` the contract every analyser keeps, ``analysers`` the one
list of them (one line per analyser; the ``risk`` stage in ``processors/risk`` builds them from
it), ``packages`` the in-use packages analyser and its vulnerability-report labelling.
"""

from otelguard.risk.analyser import Analyser
from otelguard.risk.model import Finding, Observation

__all__ = ["Analyser", "Finding", "Observation"]
