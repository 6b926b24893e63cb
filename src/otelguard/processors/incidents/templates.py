"""The template story of an incident: a title, where it happens, one sentence per step in time
order, why it matters (ATT&CK techniques with their links; CIS Kubernetes Benchmark references
where a step concerns configuration), next steps, and the evidence table. Every sentence ends
with the evidence ids (``[E1]``) of the steps it is made from; ``E<n>`` is resolved in the
evidence table to the detection's ``log.record.uid``, its trigger's uid and its trace id.

Pure: the same incident gives the same text. Cost: ~50-100 µs per version (per incident
change, never per record). Sentences per trigger event / profile kind: docs/incidents.md.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from otelguard import semconv as S
from otelguard.processors.incidents import references as R
from otelguard.processors.incidents.evidence import Place, RiskCitation, Step
from otelguard.processors.incidents.incident import Incident
from otelguard.transport.controls import visible

_WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND")
MAX_COMMAND = 160  # characters of a command line told (the evidence record has all of it)


def command(value: object) -> str:
    """A command line as one line (control characters escaped), at most MAX_COMMAND long."""
    text = visible(str(value))
    return text if len(text) <= MAX_COMMAND else text[:MAX_COMMAND - 1] + "…"


@dataclass(frozen=True)
class Story:
    title: str
    text: str  # the record body


def clock(ns: int) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(ns / 1e9)) if ns else "--:--:--"


def iso(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns / 1e9)) + \
        f".{ns // 1000 % 1_000_000:06d}Z"


def cite(steps: list[Step], risks: tuple[RiskCitation, ...] = ()) -> str:
    return "[" + ", ".join([f"E{s.eid}" for s in sorted(steps, key=lambda s: s.eid)]
                           + [f"R{r.rid}" for r in risks]) + "]"


def risk_sentence(inc: Incident, r: RiskCitation) -> str:
    """One risk fact that bears on the incident (risks.py), citing its steps and its record;
    a grant nobody in the incident exercised cites the first step (it widened its reach)."""
    steps = [s for s in inc.steps if s.eid in r.steps] or inc.ordered_steps()[:1]
    f = steps[0].facts if steps else {}
    proc = f.get("exe") or f.get("exe_name") or "the process"
    g = r.facts
    if r.kind == "vulnerability":
        pkg = f"{g.get('ecosystem') or '?'} package {g.get('name', '?')} {g.get('version', '')}"
        verb = "runs from" if r.how == "executed" else "had loaded"
        text = (f"{proc} {verb} {pkg.rstrip()}, which has {g.get('id', '?')} ({r.severity}), "
                f"in use ({r.state})")
    elif r.kind == "capability":
        text = (f"{proc} used {r.subject}, a capability the workload is granted and was not "
                f"seen using before" if r.how == "exercised" else
                f"the workload is granted {r.subject} and does not use it: it widens what "
                f"{proc} could do (drop it)")
    elif r.kind == "token":
        text = (f"{proc} read the service-account token, which the workload was not seen "
                f"using before" if r.how == "exercised" else
                f"the mounted service-account token is unused: {proc} could act as the pod's "
                f"service account (do not mount it)")
    else:
        text = (f"the connection of {proc} reaches {g.get('target', '?')} (tier "
                f"{g.get('tier', '?')}; {g.get('reason', '')}), a sensitive-reach edge "
                f"({r.state})")
    return f"Risk: {text} {cite(steps, (r,))}."


def where(place: Place, workload: str) -> str:
    """``pod shop/web-1 (Deployment web, container web, image registry/web)``."""
    if place.pod:
        parts = [f"{place.workload_kind} {place.workload_name}"] if place.workload_kind else []
        parts += [f"container {place.container}"] if place.container else []
        parts += [f"image {place.image}"] if place.image else []
        head = f"pod {place.namespace}/{place.pod}" if place.namespace else f"pod {place.pod}"
        return head + (f" ({', '.join(parts)})" if parts else "")
    if place.container_id:
        text = f"container {place.container_id[:12]}"
        extra = [f"pod uid {place.pod_uid}"] if place.pod_uid else []
        extra += [f"image {place.image}"] if place.image else []
        return text + (f" ({', '.join(extra)})" if extra else "")
    return f"host {place.host or place.node or '?'} ({workload})"


def actor(f: dict[str, Any]) -> str:
    """The process, its command line and its parent's."""
    cmd, exe = f.get("cmdline"), f.get("exe") or f.get("exe_name")
    cmd = command(cmd) if cmd else None
    who = f"`{cmd}`" if cmd else f"`{exe or 'process'}`"
    extra = [str(exe)] if cmd and exe else []
    extra += [f"pid {f['pid']}"] if f.get("pid") else []
    extra += [f"user {f['user']}"] if f.get("user") else ([f"uid {f['uid']}"] if "uid" in f else [])
    pcmd, pexe = f.get("parent_cmdline"), f.get("parent_exe")
    pcmd = command(pcmd) if pcmd else None
    if pcmd or pexe:
        extra.append(f"parent `{pcmd or pexe}`" + (f" {pexe}" if pcmd and pexe else ""))
    return who + (f" ({', '.join(extra)})" if extra else "")


def peer(f: dict[str, Any]) -> str:
    addr = f.get("peer", "?")
    text = f"{addr}:{f['port']}" if f.get("port") else str(addr)
    if f.get("transport"):
        text += f"/{f['transport']}"
    names = [f"pod {f.get('peer_namespace', '')}/{f['peer_pod']}"] if f.get("peer_pod") else []
    names += [f"service {f['peer_service']}"] if f.get("peer_service") else []
    return text + (f" ({', '.join(names)})" if names else "")


def action(s: Step) -> str:
    """What the step's process did, from its trigger event (or profile kind)."""
    f, ev = s.facts, s.trigger_event
    file = f.get("file", "")
    if ev == S.EV_FILE_OPEN:
        writes = any(w in str(f.get("flags", "")) for w in _WRITE_FLAGS)
        return f"opened {file} for writing" if writes else f"read {file}"
    if ev == S.EV_PROCESS_EXEC:
        how = [w for k, w in (("exe_from_memfd", "from a memfd (in memory only)"),
                              ("exe_upper_layer", "from the container's writable layer"),
                              ("exe_deleted", "from a deleted file")) if f.get(k)]
        return "was started" + (" " + " and ".join(how) if how else "")
    simple = {
        S.EV_FILE_UNLINK: f"deleted {file}", S.EV_FILE_CHMOD: f"changed the mode of {file}",
        S.EV_FILE_CHOWN: f"changed the owner of {file}", S.EV_FILE_MKDIR: f"created {file}",
        S.EV_FILE_RENAME: f"renamed {file} to {f.get('target_path', '?')}",
        S.EV_FILE_SYMLINK: f"linked {file} to {f.get('target_path', '?')}",
        S.EV_FILE_LINK: f"hard-linked {file} as {f.get('target_path', '?')}",
        S.EV_FILE_TRUNCATE: f"truncated {file}",
        S.EV_NETWORK_CONNECT: f"connected to {peer(f)}",
        S.EV_NETWORK_ACCEPT: f"accepted a connection from {peer(f)}",
        S.EV_NETWORK_LISTEN: "listened for connections",
        S.EV_DNS_QUERY: f"looked up {f.get('dns', '?')}",
        S.EV_PTRACE: f"called ptrace {f.get('ptrace', '')} on pid {f.get('target_pid', '?')}",
        S.EV_MEMFD_CREATE: f"created an in-memory file (memfd {f.get('memfd', '?')})",
        S.EV_DUP: f"redirected its standard input/output to a {f.get('dup_type', 'descriptor')}"
        + (f" connected to {peer(f)}" if f.get("peer") else ""),
        S.EV_PRIV_CAPABLE: f"used {f.get('capability', 'a capability')}",
        S.EV_PRIV_SETUID: "changed its user id", S.EV_MOUNT: "mounted a file system",
        S.EV_MODULE_LOAD: "loaded a kernel module", S.EV_UNSHARE: "created new namespaces",
        S.EV_SETNS: "joined another namespace",
    }
    if ev in simple:
        return simple[ev].replace("  ", " ")
    if s.anomaly_kind:
        return f"did {s.anomaly_kind.replace('_', ' ')} {s.anomaly_value}"
    return f"triggered {ev.removeprefix('otelguard.') or 'a detection'}"


def sentence(s: Step) -> str:
    flagged = f'rule "{s.rule}"' + (f" ({s.ruleset}, {s.priority})" if s.ruleset
                                      else f" ({s.priority})")
    if s.anomaly_kind:
        flagged += f", since the approved profile of {s.profile} lacks {s.anomaly_value}"
    times = f"; {s.count} times until {clock(s.last_ns)}" if s.count > 1 else ""
    return visible(f"{clock(s.time_ns)} {actor(s.facts)} {action(s)}; {flagged} flagged it"
                   f"{times} {cite([s])}.")


def title(inc: Incident) -> str:
    steps = inc.ordered_steps()
    acts = []
    for s in steps[:3]:
        name = s.facts.get("exe_name") or str(s.facts.get("exe", "process")).rsplit("/", 1)[-1]
        acts.append(f"{name} {action(s)}")
    more = f" (+{len(steps) - 3} more)" if len(steps) > 3 else ""
    return f"{where(inc.place, inc.workload).split(' (')[0]}: " + "; ".join(acts) + more


def why(inc: Incident) -> list[str]:
    lines = []
    for t in inc.techniques():
        cited = [s for s in inc.steps if t in s.techniques]
        tactic = next((x for s in cited for x in s.tactics), "")
        name = R.TECHNIQUES.get(t, "")
        lines.append(f"{t}{' ' + name if name else ''}"
                     f"{f' ({R.tactic_title(tactic)})' if tactic else ''}: "
                     f"{R.technique_url(t)} {cite(cited)}.")
    first = inc.ordered_steps()[:1]
    p = inc.place
    facts = [("privileged", p.privileged, "the pod runs privileged"),
             ("host_pid", p.host_pid, "the pod shares the host's process ids"),
             ("host_network", p.host_network, "the pod shares the host's network"),
             ("added_capabilities", bool(p.added_capabilities),
              f"the pod adds {', '.join(p.added_capabilities)}")]
    for key, present, text in facts:
        if present and first:
            num, rec = R.CIS[key]
            lines.append(f"CIS Kubernetes Benchmark {num} ({rec}): {text} {cite(first)}.")
    token = [s for s in inc.steps if str(s.facts.get("file", "")).startswith(R.SERVICE_ACCOUNT_DIR)]
    if token:
        num, rec = R.CIS["service_account_token"]
        lines.append(f"CIS Kubernetes Benchmark {num} ({rec}): the service-account token was "
                     f"read {cite(token)}.")
    root = [s for s in inc.steps if s.facts.get("uid") == 0]
    if root and p.in_kubernetes:
        num, rec = R.CIS["root"]
        lines.append(f"CIS Kubernetes Benchmark {num} ({rec}): the process ran as root "
                     f"{cite(root)}.")
    return lines


def next_steps(inc: Incident) -> list[str]:
    lines = []
    for tactic in inc.tactics():
        template = R.NEXT_STEPS.get(tactic)
        if template is None:
            continue
        steps = [s for s in inc.steps if tactic in s.tactics]
        f = steps[0].facts
        peers = sorted({peer(s.facts) for s in steps if s.facts.get("peer")}) or \
            sorted({str(s.facts["dns"]) for s in steps if s.facts.get("dns")})
        files = sorted({str(s.facts["file"]) for s in steps if s.facts.get("file")})
        lines.append(template.format(
            proc=f.get("exe") or f.get("exe_name") or "the process",
            image=inc.place.image or "its image", parent=f.get("parent_exe") or "its parent",
            what=", ".join(files) or "the process tree", since=iso(inc.first_ns),
            peer=", ".join(peers) or "the peer").rstrip(".") + f" {cite(steps)}.")
    contain = R.CONTAIN if inc.place.in_kubernetes else R.CONTAIN_HOST
    lines.append(f"{contain.rstrip('.')} {cite(inc.steps)}.")
    return lines


def evidence_table(inc: Incident) -> list[str]:
    return [f"E{s.eid} log.record.uid={s.uid} ({s.rule} at {iso(s.time_ns)}"
            + (f"; trigger {s.trigger_uid}" if s.trigger_uid else "")
            + (f"; trace {s.trace_id}" if s.trace_id else "") + ")"
            for s in sorted(inc.steps, key=lambda s: s.eid)] + \
        [f"R{r.rid} log.record.uid={r.uid} (risk finding: {r.summary})" for r in inc.risks]


def story(inc: Incident) -> Story:
    head = title(inc)
    number, word, raised = inc.severity()
    lines = [head,
             f"Incident {inc.id} v{inc.version} · {word}" + (f" ({raised})" if raised else "")
             + f" · {inc.status} · {iso(inc.first_ns)} .. {iso(inc.last_ns)}",
             f"Where: {where(inc.place, inc.workload)}"
             + (f", node {inc.place.node}" if inc.place.node else "")
             + f" {cite(inc.ordered_steps()[:1])}."]
    n = inc.narration
    if n is not None and n.result == "llm":
        lines += ["", f"Summary (model, checked against the evidence): {n.title}"]
        lines += [f"  - {b}" for b in n.bullets]
        lines += [f"  > {b}" for b in n.next_steps]
    lines += ["", "What happened:"] + [f"  {sentence(s)}" for s in inc.ordered_steps()]
    if inc.untold:
        lines.append(f"  ({inc.untold} further distinct detections are counted, not told.)")
    lines += ["", "Why it matters:"] + [f"  - {w}" for w in why(inc)]
    lines += [f"  - {risk_sentence(inc, r)}" for r in inc.risks]
    lines += ["", "Next steps:"] + [f"  - {w}" for w in next_steps(inc)]
    lines += ["", "Evidence:"] + [f"  {e}" for e in evidence_table(inc)]
    lines.append(f"Folded: {inc.events} events and {inc.detections} detections into "
                 f"{len(inc.steps)} steps.")
    # one line per line: a path or name with a newline or an escape sequence cannot forge one
    return Story(visible(head), "\n".join(visible(line) for line in lines))
