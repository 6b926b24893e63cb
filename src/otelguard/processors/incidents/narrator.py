"""The optional narrator: an OpenAI-compatible chat model retells an incident from its facts
only, and its answer is used only when the validator finds it grounded (docs/incidents.md).

It gets the incident's facts as JSON (names replaced by placeholders when ``mask_names``, as
k8sgpt masks them, and put back into the answer afterwards), at temperature 0, and is asked for
a title, three bullets and next steps, each citing evidence ids. Plain HTTP (``POST
{base_url}/chat/completions``, the API key from the environment variable ``api_key_env``); any
OpenAI-compatible server works. One thread per stage does the calls, so the pipeline never
waits on the model: :meth:`Narrator.submit` only queues (the newest facts per incident; when
``max_queue`` incidents wait, the next is counted ``busy`` and told by template only), and the
stage applies :meth:`Narrator.results` at its next drain. A timeout, an HTTP error or an answer
that is not the JSON asked for leaves the template story (narrator ``template``, with the reason
in ``otelguard.incident.narrator.detail``); an ungrounded answer is ``rejected``.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
import urllib.error
import urllib.request
from collections import OrderedDict
from typing import Any, Optional

from otelguard.processors.incidents import metrics
from otelguard.processors.incidents.config import LlmConfig
from otelguard.processors.incidents.incident import Incident, Narration
from otelguard.processors.incidents.references import TECHNIQUES, technique_url
from otelguard.processors.incidents.settings import api_key
from otelguard.processors.incidents.templates import iso
from otelguard.processors.incidents.validator import validate

log = logging.getLogger(__name__)

PROMPT = (
    "You summarise one security incident for an on-call engineer. Use ONLY the facts in the "
    "user message (JSON). Never name a pod, namespace, image, host, path, address, domain, "
    "command, user or ATT&CK technique that is not in the facts, and never guess causes or "
    "attackers. Quote commands, process names and users in backticks exactly as in the facts. "
    "Answer with one JSON object: {\"title\": string, \"bullets\": [three strings], "
    "\"next_steps\": [strings]}. End every bullet with the evidence ids it is based on, like "
    "[E1] or [E1, E2], taken from evidence_ids.")
_MASKED = ("pod", "namespace", "workload", "container", "image", "node", "host", "pod_uid",
           "container_id")
_PEER_MASKED = {"peer_pod": "pod", "peer_namespace": "namespace", "peer_workload": "workload",
                "peer_service": "service"}


class Masks:
    """Real name <-> placeholder (``pod-1``), per incident."""

    def __init__(self) -> None:
        self.to_mask: dict[str, str] = {}
        self.counts: dict[str, int] = {}

    def mask(self, kind: str, value: str) -> str:
        if not value:
            return value
        if value not in self.to_mask:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            self.to_mask[value] = f"{kind}-{self.counts[kind]}"
        return self.to_mask[value]

    def in_text(self, text: str) -> str:
        for real in sorted(self.to_mask, key=len, reverse=True):
            if len(real) >= 3:
                text = text.replace(real, self.to_mask[real])
        return text

    def unmask(self, text: str) -> str:
        back = {v: k for k, v in self.to_mask.items()}
        return re.sub(r"\b(?:" + "|".join(map(re.escape, sorted(back, key=len, reverse=True)))
                      + r")\b", lambda m: back[m.group(0)], text) if back else text


def facts_of(inc: Incident, masks: Optional[Masks]) -> dict[str, Any]:
    """What the model may know: the incident's facts as JSON (masked when ``masks``)."""
    p = inc.place
    where = {"pod": p.pod, "namespace": p.namespace, "workload": p.workload_name,
             "workload_kind": p.workload_kind, "container": p.container, "image": p.image,
             "node": p.node, "host": p.host, "pod_uid": p.pod_uid,
             "container_id": p.container_id}
    if masks is not None:
        where = {k: masks.mask(k, v) if k in _MASKED else v for k, v in where.items()}
    steps = []
    for s in inc.ordered_steps():
        f = {k: v for k, v in s.facts.items() if k not in ("cgroup", "ancestor_pids")}
        if masks is not None:
            for k, kind in _PEER_MASKED.items():
                if f.get(k):
                    f[k] = masks.mask(kind, str(f[k]))
            f = {k: masks.in_text(v) if isinstance(v, str) else v for k, v in f.items()}
        steps.append({"id": f"E{s.eid}", "time": iso(s.time_ns), "rule": s.rule,
                      "priority": s.priority, "tactics": s.tactics, "techniques": s.techniques,
                      "count": s.count, "facts": f})
    def hide(value: Any) -> Any:  # risk facts name workloads, namespaces, Services
        return masks.in_text(value) if masks is not None and isinstance(value, str) else value

    _, word, raised = inc.severity()
    return {
        "severity": word, "severity_reason": raised, "where": {k: v for k, v in where.items() if v},
        "steps": steps,
        "techniques": [{"id": t, "name": TECHNIQUES.get(t, ""), "url": technique_url(t)}
                       for t in inc.techniques()],
        "risks": [{"id": f"R{r.rid}", "kind": r.kind, "state": r.state, "severity": r.severity,
                   "summary": hide(r.summary), "steps": [f"E{e}" for e in r.steps],
                   "facts": {k: hide(v) for k, v in r.facts.items()}} for r in inc.risks],
        "events": inc.events, "detections": inc.detections,
        "evidence_ids": [f"E{s.eid}" for s in inc.steps] + [f"R{r.rid}" for r in inc.risks],
    }


class Narrator:
    def __init__(self, config: LlmConfig) -> None:
        self.config = config
        self._queue: OrderedDict[str, tuple[dict[str, Any], Optional[Masks], int]] = OrderedDict()
        self._results: list[tuple[str, Narration]] = []
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="incident-narrator", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=self.config.timeout_s + 2)
            self._thread = None

    def submit(self, inc: Incident) -> None:
        """Queue the incident's current facts (never blocks)."""
        masks = Masks() if self.config.mask_names else None
        facts = facts_of(inc, masks)
        with self._cond:
            if inc.id not in self._queue and len(self._queue) >= self.config.max_queue:
                metrics.narrations.labels("busy").inc()
                return
            self._queue[inc.id] = (facts, masks, len(inc.steps))
            self._cond.notify()

    def results(self) -> list[tuple[str, Narration]]:
        with self._cond:
            out, self._results = self._results, []
        return out

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                iid, (facts, masks, steps) = self._queue.popitem(last=False)
            narration = self.narrate(facts, masks)
            narration.for_steps = steps
            metrics.narrations.labels(narration.result if narration.result != "template"
                                      else narration.detail.split(":")[0]).inc()
            with self._cond:
                self._results.append((iid, narration))

    def narrate(self, facts: dict[str, Any], masks: Optional[Masks]) -> Narration:
        """One call and its check (on the narrator thread; tests call it directly)."""
        try:
            content = self._call(facts)
        except (socket.timeout, TimeoutError):
            return Narration("template", "timeout: no answer within "
                             f"{self.config.timeout_s:g}s")
        except urllib.error.HTTPError as exc:
            return Narration("template", f"error: HTTP {exc.code}")
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, (socket.timeout, TimeoutError)):
                return Narration("template", "timeout: no answer within "
                                 f"{self.config.timeout_s:g}s")
            return Narration("template", f"error: {exc.reason}")
        except ValueError as exc:
            return Narration("template", f"malformed: {exc}")
        except OSError as exc:
            return Narration("template", f"error: {type(exc).__name__}: {exc}")
        try:
            answer = json.loads(_unfence(content))
        except (TypeError, ValueError):
            return Narration("template", "malformed: the answer is not JSON")
        problems = validate(answer, facts)
        if problems:
            log.info("incident narrator: answer rejected: %s", "; ".join(problems[:3]))
            return Narration("rejected", "; ".join(problems[:3]))
        back = masks.unmask if masks is not None else (lambda t: t)
        return Narration("llm", "", back(answer["title"]), [back(b) for b in answer["bullets"]],
                         [back(s) for s in answer["next_steps"]])

    def _call(self, facts: dict[str, Any]) -> str:
        body = json.dumps({
            "model": self.config.model, "temperature": 0,
            "response_format": {"type": "json_object"},
            "messages": [{"role": "system", "content": PROMPT},
                         {"role": "user", "content": json.dumps(facts, sort_keys=True)}],
        }).encode()
        headers = {"Content-Type": "application/json"}
        key = api_key(self.config.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(self.config.base_url.rstrip("/") + "/chat/completions",
                                     data=body, headers=headers, method="POST")
        with urllib.request.urlopen(req, timeout=self.config.timeout_s) as resp:
            reply = json.loads(resp.read())
        try:
            content = reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise ValueError("no choices[0].message.content in the reply") from None
        if not isinstance(content, str):
            raise ValueError("choices[0].message.content is not a string")
        return content


def _unfence(text: str) -> str:
    """A JSON object possibly wrapped in a Markdown code fence."""
    m = re.fullmatch(r"\s*```(?:json)?\s*(.*?)\s*```\s*", text, re.DOTALL)
    return m.group(1) if m else text
