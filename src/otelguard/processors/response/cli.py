"""``otelguard respond list|show|approve|reject|revert`` on a local request store, and
``otelguard audit verify FILE | --loki URL`` (docs/response.md#approval, #audit).

The store is the ``response`` stage's directory (``--store DIR``); the commands take its lock,
so they are safe while ``otelguard run`` works on it, and every decision they make is a
transition the store audits. Exit codes: 0; 1 (refused: no such request, an illegal move, an
expired or advise-only request, a broken chain); 2 (bad arguments, unreadable store, Loki
unreachable).
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from pathlib import Path

from otelguard import semconv as S
from otelguard.config import parse_duration
from otelguard.processors.incidents.cli import LokiError, query_range, table
from otelguard.response import audit
from otelguard.response.request import IllegalTransition, ResponseRequest, State
from otelguard.response.responder import Refused, Responder, approve, reject
from otelguard.response.store import LocalStore, StoreError
from otelguard.transport.controls import visible


def _when(seconds: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds)) if seconds else ""


def actor(args: argparse.Namespace) -> str:
    """``--by``, else the invoking user (as ``otelguard profile approve``)."""
    return str(args.by or getpass.getuser())


def show(req: ResponseRequest) -> str:
    lines = [f"request   {req.id}", f"state     {req.state.value if req.state else '?'}",
             f"policy    {req.policy} (revision {req.policy_revision}, mode {req.mode}"
             f"{', dry run' if req.dry_run else ''})",
             f"trigger   {req.trigger.source} {req.trigger.uid}: {req.trigger.summary} "
             f"({req.trigger.severity})"]
    if req.trigger.incident_id:
        lines.append(f"incident  {req.trigger.incident_id}")
    if req.trigger.trace_ids:
        lines.append(f"traces    {', '.join(req.trigger.trace_ids)}")
    lines += [f"target    {', '.join(f'{k}={v}' for k, v in req.target.as_dict().items())}",
              f"created   {_when(req.created)} UTC, expires {_when(req.expires_at)} UTC",
              f"changes   {req.changes_hash}"]
    decision = next((t for t in req.history if t.to in (State.APPROVED.value,
                                                          State.REJECTED.value)), None)
    if decision is not None:
        lines.append(f"decided   {decision.to.lower()} by {decision.by}"
                     f"{': ' + decision.reason if decision.reason else ''}")
    if req.revert_at:
        lines.append(f"reverts   {_when(req.revert_at)} UTC (ttl)")
    for i, s in enumerate(req.steps, 1):
        lines.append(f"step {i}    {s.action} [{s.change.where}]"
                     f"{' ignore_errors' if s.ignore_errors else ''}: {s.change.summary}")
        lines += [f"  | {d}" for d in s.change.diff.splitlines()]
        if s.outcome is not None:
            lines.append(f"  outcome: {'ok' if s.outcome.ok else 'FAILED'}: {s.outcome.message}")
        if s.error:
            lines.append(f"  error: {s.error}")
        if s.reverted is not None:
            lines.append(f"  reverted: {s.reverted.message}")
    lines.append("history")
    lines += [f"  {_when(t.at)}  {t.frm} -> {t.to}  by {t.by}{': ' + t.reason if t.reason else ''}"
              for t in req.history]
    return "\n".join(visible(line) for line in lines)


def _rows(reqs: list[ResponseRequest]) -> list[list[str]]:
    return [[r.id, r.state.value if r.state else "?", r.mode, r.policy,
             r.steps[0].change.summary[:60] if r.steps else "", _when(r.created),
             _when(r.expires_at) if r.state == State.PROPOSED else ""] for r in reqs]


_HEAD = ["ID", "STATE", "MODE", "POLICY", "CHANGE", "CREATED (UTC)", "EXPIRES (UTC)"]


def respond_main(args: argparse.Namespace) -> int:
    if getattr(args, "kube", False):
        return _kube_main(args)
    if not args.store:
        print("otelguard respond: give --store DIR (the stage's store) or --kube",
              file=sys.stderr)
        return 2
    try:
        store = LocalStore(Path(args.store))
        if args.verb == "list":
            print(table(_rows(store.requests()), _HEAD))
            return 0
        req = store.get(args.id)
        if req is None:
            print(f"otelguard respond: no request {args.id!r} in {args.store}", file=sys.stderr)
            return 1
        if args.verb == "show":
            print(show(req))
            return 0
        by = actor(args)
        if args.verb == "approve":
            req = approve(store, req.id, by=by, reason=args.reason or "")
            print(f"approved {req.id} by {by} (changes {req.changes_hash})")
            return _wait(store, req.id, args.wait)
        if args.verb == "reject":
            req = reject(store, req.id, by=by, reason=args.reason or "")
            print(f"rejected {req.id} by {by}")
            return 0
        from otelguard.processors.response.processor import available_actions
        from otelguard.response.policy import PolicySet
        cluster = any(s.change.where == "cluster" for s in req.steps)
        responder = Responder(PolicySet(), store, available_actions(args.kubeconfig, cluster))
        req = responder.revert(req.id, by=by, reason=args.reason or "manual revert")
        print(f"reverted {req.id} by {by}")
        return 0
    except (IllegalTransition, Refused) as exc:
        print(f"otelguard respond: {exc}", file=sys.stderr)
        return 1
    except (StoreError, OSError) as exc:
        print(f"otelguard respond: {exc}", file=sys.stderr)
        return 2


def _wait(store: LocalStore, rid: str, seconds: float) -> int:
    """``--wait``: until the running responder executed the approved request."""
    deadline = time.monotonic() + seconds
    while seconds > 0 and time.monotonic() < deadline:
        req = store.get(rid)
        if req is not None and req.state in (State.DONE, State.FAILED):
            print(f"{req.state.value}: {audit.outcome_text(req)}")
            return 0 if req.state == State.DONE else 1
        time.sleep(0.05)
    if seconds > 0:
        req = store.get(rid)
        state = req.state.value if req is not None and req.state else "?"
        print(f"still {state} after {seconds:g} s (is the response stage running on this "
              f"store?)", file=sys.stderr)
        return 1
    return 0


def _kube_main(args: argparse.Namespace) -> int:
    """``--kube``: read the ResponseRequest objects; decide by patching ``spec.decision`` (the
    responder carries it out at its next tick; RBAC decides who may)."""
    from otelguard.kube import CustomResources, KubeError, NotFound, api_client_from, own_namespace
    from otelguard.kube.custom import meta
    from otelguard.response.kube_store import PLURAL, request_of

    try:
        res = CustomResources(api_client_from(args.kubeconfig or ""), PLURAL)
        ns = args.namespace or own_namespace("otelguard")
        objs = res.list(ns).items
        reqs = [r for r in (request_of(o) for o in objs) if r is not None]
        if args.verb == "list":
            print(table(_rows(sorted(reqs, key=lambda r: r.created)), _HEAD))
            return 0
        found = [o for o in objs if str(meta(o).get("name", "")).startswith(args.id)]
        if len(found) != 1:
            print(f"otelguard respond: {args.id!r} names {len(found)} requests in namespace "
                  f"{ns}", file=sys.stderr)
            return 1
        name = str(meta(found[0])["name"])
        req = request_of(found[0])
        if args.verb == "show":
            print(show(req) if req else f"{name}: not written by a responder yet")
            return 0
        by = actor(args)
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) + f".{time.time_ns() % 10**9:09d}"
        res.patch(name, {"spec": {"decision": {"action": args.verb, "by": by,
                                               "reason": args.reason or "", "at": at}}}, ns)
        print(f"{args.verb} of {name} by {by} recorded; the responder carries it out")
        deadline = time.monotonic() + (getattr(args, "wait", 0.0) or 0.0)
        while time.monotonic() < deadline:
            obj = res.get(name, ns)
            status = obj.get("status") or {}
            if int(status.get("observedGeneration") or 0) >= int(meta(obj).get("generation") or 0):
                print(f"{status.get('state')}: {status.get('decisionResult', '')}")
                return 0 if str(status.get("decisionResult", "")).startswith("done") else 1
            time.sleep(0.1)
        return 0
    except NotFound as exc:
        print(f"otelguard respond: {exc} (is the ResponseRequest CRD installed?)",
              file=sys.stderr)
        return 2
    except KubeError as exc:
        print(f"otelguard respond: {exc}", file=sys.stderr)
        return 2


def install_crd_main(args: argparse.Namespace) -> int:
    from otelguard.kube import KubeError, api_client_from, install_crd
    from otelguard.response.kube_store import CRD_PATH

    try:
        install_crd(api_client_from(args.kubeconfig or ""), CRD_PATH)
    except KubeError as exc:
        print(f"otelguard respond install-crd: {exc}", file=sys.stderr)
        return 2
    print("responserequests.otelguard.dev established")
    return 0


def verify_main(args: argparse.Namespace) -> int:
    if (args.file is None) == (args.loki is None):
        print("otelguard audit verify: give FILE or --loki URL", file=sys.stderr)
        return 2
    try:
        if args.file is not None:
            records = audit.read_jsonl(args.file)
        else:
            since = parse_duration(args.since)
            records = [audit.from_loki(labels, line, f"loki {_when(ts / 1e9)}")
                       for labels, line, ts in query_range(
                           args.loki, f'{{otelguard_stream="{S.STREAM_AUDIT}"}}', since,
                           limit=args.limit)]
    except (OSError, ValueError, LokiError) as exc:
        print(f"otelguard audit verify: {exc}", file=sys.stderr)
        return 2
    result = audit.verify(records, complete=args.file is not None)
    print("\n".join(visible(line) for line in audit.report(result).splitlines()))
    return 0 if result.ok else 1
