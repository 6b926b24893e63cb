"""The ``grants`` analyser: the ledger behind the :class:`~otelguard.risk.analyser.Analyser`
contract, and its verdicts as findings (docs/risk.md#granted-vs-used).

Findings: kind ``capability`` | ``token`` | ``host_path`` | ``privileged``; state ``used``,
``unverifiable``, ``learning`` (not used yet, window not over), or, once the workload was
observed for ``learning_seconds``: ``unused``, ``unwritten`` (a read-write hostPath only read:
``readOnly`` suffices), ``unneeded`` (privileged). Only those three become records, each with
its suggestion; the others are in the gauges and the snapshot.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from otelguard import semconv as S
from otelguard.risk.analyser import Dropped
from otelguard.risk.grants.config import GrantsConfig
from otelguard.risk.grants.ledger import (
    _FILE_CHANGES, CAPABILITY, EVENTS, HOST_PATH, PRIVILEGED, SA_TOKEN_DIRS, TOKEN, UNNEEDED,
    UNUSED, UNWRITTEN, GrantTracker, Ledger, Verdict, owner_of, resource_grants,
)
from otelguard.risk.grants.suggest import suggestion
from otelguard.risk.model import Finding, Observation

NAME = "grants"
LEARNING = "learning"
FINDINGS = (UNUSED, UNWRITTEN, UNNEEDED)  # the states that are findings (records)
# capabilities whose unused grant weighs more: escapes, sniffing, host control
RISKY = frozenset({"CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_SYS_PTRACE",
                   "CAP_SYS_MODULE", "CAP_DAC_READ_SEARCH", "CAP_BPF", "CAP_PERFMON",
                   "CAP_SYS_RAWIO", "CAP_SYS_TIME", "CAP_SYS_BOOT", "CAP_MAC_ADMIN",
                   "CAP_MAC_OVERRIDE", "CAP_SYSLOG", "CAP_LINUX_IMMUTABLE"})
_COMMON = frozenset({S.SYSCALL_RET, S.LOG_RECORD_UID, S.PROCESS_CAP_EFFECTIVE,
                     S.PROCESS_EXECUTABLE_PATH})
# the record attributes the ledger reads, by event (GrantTracker.observe): exactly those, so
# the stage's positional reader need not prove absent keys a record of the event never has
FIELDS_BY_EVENT = {
    **{e: _COMMON for e in EVENTS},
    S.EV_PRIV_CAPABLE: _COMMON | {S.CAPABILITY},
    S.EV_FILE_OPEN: _COMMON | {S.FILE_PATH, S.FILE_OPEN_FLAGS},
    **{e: _COMMON | {S.FILE_PATH} for e in _FILE_CHANGES},
    **{e: _COMMON | {S.FILE_PATH, S.FILE_TARGET_PATH}
       for e in (S.EV_FILE_RENAME, S.EV_FILE_LINK, S.EV_FILE_SYMLINK)},
    S.EV_NETWORK_CONNECT: _COMMON | {S.NETWORK_PEER_ADDRESS, S.NETWORK_PEER_PORT,
                                     S.PEER_K8S_NAMESPACE_NAME, S.PEER_K8S_SERVICE_NAME},
    S.EV_UNSHARE: _COMMON | {S.NAMESPACE_FLAGS},
}
FIELDS = frozenset().union(*FIELDS_BY_EVENT.values())
_RESOURCE_KEYS = (S.K8S_POD_PRIVILEGED, S.K8S_POD_ADDED_CAPABILITIES, S.K8S_CONTAINER_MOUNTS,
                  S.K8S_POD_SERVICE_ACCOUNT)


def severity(v: Verdict) -> str:
    if v.state not in FINDINGS:
        return "none"
    if v.kind == PRIVILEGED:
        return "high"
    if v.kind == CAPABILITY:
        return "medium" if v.subject in RISKY else "low"
    if v.kind == HOST_PATH and v.state == UNWRITTEN:
        return "low"
    return "medium"  # an unused token or hostPath


class GrantsAnalyser:
    name = NAME
    events = EVENTS
    fields = FIELDS
    fields_by_event = FIELDS_BY_EVENT
    def __init__(self, config: GrantsConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        # read-only opens the kernel filter must send (otelguard run widens it; the agent's
        # built-in list has them): token reads are the token's use, and reads under
        # config.read_prefixes are what the ledger takes as seen (the rules-derived filter
        # sends no more than the rules need, docs/architecture.md#kernel-facts)
        self.read_path_prefixes = SA_TOKEN_DIRS + config.read_prefixes
        self.tracker = GrantTracker(config)
        self.clock = clock
        self._lock = threading.Lock()
        self._raw: dict[str, int] = {}  # workload -> hash of its Resource's grant attributes
        self._seen: dict[str, int] = {}  # workload -> id() of the Resource dict last compared

    def start(self) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def observe(self, observation: Observation) -> None:
        owner = owner_of(observation.workload)
        if owner is None or not owner.container:
            return  # host processes, containers without a pod spec (a sandbox): nothing granted
        res = observation.resource
        workload = observation.workload
        with self._lock:
            led = self.tracker.ledgers.get(workload)
            # The stage hands every record of one Resource the same dict: its grant attributes
            # are compared once per Resource and batch (an address reused by the next batch's
            # dict defers a changed spec to the next Resource that differs: specs change rarely)
            if led is None or self._seen.get(workload) != id(res):
                raw = hash(tuple(repr(res.get(k)) for k in _RESOURCE_KEYS))
                if led is None or self._raw.get(workload) != raw:
                    led = self.tracker.resource(workload, resource_grants(res, owner),
                                                self.clock())
                    self._raw[workload] = raw
                self._seen[workload] = id(res)
            self.tracker.observe(led, observation.event_name, observation.attributes)

    def workloads(self) -> list[str]:
        with self._lock:
            return list(self.tracker.ledgers)

    def forget(self, workload: str) -> None:
        with self._lock:
            self.tracker.ledgers.pop(workload, None)
            self._raw.pop(workload, None)
            self._seen.pop(workload, None)

    def findings(self, workload: str) -> list[Finding]:
        with self._lock:
            led = self.tracker.ledgers.get(workload)
            if led is None:
                return []
            now = self.clock()
            return [self._finding(v, led, now) for v in self.tracker.verdicts(led)]

    def _finding(self, v: Verdict, led: Ledger, now: float) -> Finding:
        observed = led.observed_seconds(now)
        window = self.config.learning_seconds
        learned = observed >= window and led.grants.spec_known
        state = v.state if learned or v.state not in FINDINGS else LEARNING
        hours, window_h = observed / 3600, window / 3600
        if state in FINDINGS:
            summary = (f"{v.summary}, after {hours:.1f} h of observation (learning window "
                       f"{window_h:.1f} h: a grant used more rarely than that is reported too)")
        elif state == LEARNING:
            summary = f"{v.summary} so far ({hours:.1f} h of a {window_h:.1f} h learning window)"
        else:
            summary = v.summary
        attrs: list[tuple[str, Any]] = [(S.RISK_OBSERVED_SECONDS, float(round(observed, 3))),
                                        (S.RISK_LEARNING_SECONDS, float(window))]
        fix = suggestion(v, led) if state in FINDINGS else None
        if fix:
            attrs.append((S.RISK_SUGGESTION, fix))
        return Finding(NAME, v.kind, v.subject, state, severity(v) if state in FINDINGS
                       else "none", summary, evidence=(v.evidence,) if v.evidence else (),
                       attributes=tuple(attrs), suggestion=fix, record=state in FINDINGS)


def create(config: Any, dropped: Dropped) -> GrantsAnalyser:
    """From the ``risk`` stage's Config (its ``grants`` section)."""
    return GrantsAnalyser(config.grants)


__all__ = ["CAPABILITY", "HOST_PATH", "NAME", "PRIVILEGED", "TOKEN", "GrantsAnalyser", "create"]
