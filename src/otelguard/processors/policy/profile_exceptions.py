"""``ProfileException`` documents in a policy tree's ``exceptions/``: reviewed, owned, expiring
exceptions to behaviour-profile deviations, as RuleException is to Falco rules.

One YAML document per exception (docs/policy.md#profile-exceptions)::

    apiVersion: otelguard.dev/v1alpha1
    kind: ProfileException
    metadata: {name: web-calls-new-payments-api}
    spec:
      owner: team-web@example.com
      expires: 2027-01-31          # applies through that day (UTC), then stops applying
      reason: payments integration; re-learn the profile after the launch
      workload: k8s/shop/Deployment/web    # a workload key, or a glob over keys (k8s/shop/*)
      kind: egress                 # the deviation kind (docs/profiles.md#the-model)
      values: ["10.20.0.0/16 443/tcp"]     # entries as a profile writes them (globs, CIDRs)

A deviation of that kind, on a matching workload, whose value one of ``values`` matches (the
profile's own entry semantics, :class:`~otelguard.processors.profiles.matching.Allowed`) is
not reported while the exception is unexpired; it is counted in
``otelguard_profile_deviations_excepted_total{kind}``. After its ``expires`` day it stops
applying (checked on every profiles sync, so also while the service runs) and says so: a
warning naming it, its owner and its date, and ``policy validate`` lists it ``EXPIRED``.
Cost: nothing per record; per deviation a pass over the (few) exceptions.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Literal, Optional

from otelguard.config import Checks
from otelguard.processors.policy.expiry import Expiring, check_owned
from otelguard.processors.profiles.matching import Allowed
from otelguard.processors.profiles.observe import KINDS


@dataclass(frozen=True)
class ProfileMetadata:
    name: str  # unique across the tree's exceptions


@dataclass(frozen=True)
class ProfileExceptionSpec:
    owner: str  # who answers for it (a person or team address); required
    # the last day (YYYY-MM-DD, UTC) it applies; required: every exception ends
    expires: Any
    workload: str  # a workload key (`otelguard profile list` names them) or a glob over keys
    kind: str  # the deviation kind: process, untrusted_exec, file_write, file_read, egress, ...
    values: tuple[str, ...]  # entries as a profile's spec writes them (globs, CIDRs, ports)
    reason: str = ""  # why (shown in reviews and `policy validate`)

    def __post_init__(self) -> None:
        checks = Checks()
        check_owned(checks, self.owner, self.expires)
        if not self.workload.strip():
            checks.add("workload", "must name a workload key or a glob over keys")
        if self.kind not in KINDS:
            checks.add("kind", f"must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if not self.values:
            checks.add("values", "needs at least one entry")
        checks.done()


@dataclass(frozen=True)
class ProfileExceptionDocument:
    apiVersion: Literal["otelguard.dev/v1alpha1"]  # noqa: N815 - the file's key
    kind: Literal["ProfileException"]
    metadata: ProfileMetadata
    spec: ProfileExceptionSpec


@dataclass(frozen=True)
class ProfileException(Expiring):
    """A loaded profile exception and where it was written."""

    name: str
    spec: ProfileExceptionSpec
    file: str
    line: Optional[int]

    @property
    def target(self) -> str:
        return f"{self.spec.kind} on {self.spec.workload}"

    def matcher(self) -> "ExceptionMatcher":
        return ExceptionMatcher(self)


class ExceptionMatcher:
    """One exception ready to test deviations: the workload glob and the kind's entries."""

    def __init__(self, exc: ProfileException) -> None:
        self.exception = exc
        self._allowed = Allowed(exc.spec.kind, list(exc.spec.values))

    def covers(self, workload: str, kind: str, value: str) -> bool:
        spec = self.exception.spec
        return kind == spec.kind and fnmatchcase(workload, spec.workload) and \
            self._allowed.matches(value)
