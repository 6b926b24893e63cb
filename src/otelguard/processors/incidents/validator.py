"""The narrator's grounding check: a model's answer is used only when everything it names is in
the incident's facts (docs/incidents.md#what-the-validator-guarantees).

Checked over the title, every bullet and every next step:

- shape: a title, 1-5 bullets, a list of next steps, all strings; every bullet cites at least
  one evidence id (``[E1]``) and every cited id (bullets and next steps) is one of the facts';
- ATT&CK technique ids (``T1059.004``) are the facts' techniques;
- IPv4 / IPv6 addresses are addresses in the facts;
- absolute paths are paths in the facts or directories holding one (``/etc`` for
  ``/etc/shadow``);
- domain names are names in the facts (URLs: only ``attack.mitre.org`` links, or a host in the
  facts);
- Kubernetes-style names (lower-case words joined by ``-`` with a digit and a letter, such as
  ``web-6d4b9c7f5-x2x9q`` or a masked ``pod-1``) are names in the facts;
- text in backticks (commands, process names, users) is a part of some fact value;
- ``user X`` / ``uid N`` name a user or uid in the facts.

Pure; ~0.1 ms per answer. What it cannot see: a wrong claim made only in ordinary words ("the
attacker is a former employee"); the prompt forbids speculation, the template story stays
beside the answer, and every bullet must cite the records it summarises.
"""

from __future__ import annotations

import re
from typing import Any

_CITE = re.compile(r"\[((?:[ER]\d+)(?:\s*,\s*[ER]\d+)*)\]")  # E: steps, R: risk records
_ID = re.compile(r"[ER]\d+")
_TECHNIQUE = re.compile(r"\bT\d{4}(?:\.\d{3})?\b")
_URL = re.compile(r"\bhttps?://([^/\s`'\")\]]+)[^\s`'\")\]]*")
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.]*\d)")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9a-fA-F]{1,4}:){2,7}[0-9a-fA-F]{0,4}(?![\w:])")
_PATH = re.compile(r"(?<![\w.:/])/[^\s`'\",;()\[\]]+")
_DOMAIN = re.compile(r"(?<![\w./-])(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}(?![\w/-])")
_K8S_NAME = re.compile(r"(?<![\w./-])[a-z0-9]+(?:-[a-z0-9]+)+(?![\w/-])")
_TICKS = re.compile(r"`([^`]+)`")
_USER = re.compile(r"\b(?:user|uid)\s*[=:]?\s*[`'\"]?([\w.-]+)", re.IGNORECASE)
_NOT_USERS = frozenset({"id", "ids", "name", "names", "account", "accounts", "the", "a", "an",
                        "that", "this", "who", "which", "running", "of", "is", "was", "and",
                        "or", "in", "to", "with", "context", "space", "namespace", "s"})
REFERENCE_HOSTS = frozenset({"attack.mitre.org"})


def strings(value: Any) -> list[str]:
    """Every string (and number, as text) inside a JSON-like value."""
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    if isinstance(value, bool) or value is None:
        return []
    return [str(value)]


def validate(answer: Any, facts: dict[str, Any]) -> list[str]:
    """Problems with ``answer`` (empty: grounded). ``facts`` is what the model was given."""
    problems: list[str] = []
    if not isinstance(answer, dict):
        return ["the answer is not a JSON object"]
    title, bullets, steps = answer.get("title"), answer.get("bullets"), answer.get("next_steps")
    if not isinstance(title, str) or not title.strip():
        problems.append("no title")
    if not isinstance(bullets, list) or not 1 <= len(bullets) <= 5 or \
            not all(isinstance(b, str) for b in bullets):
        problems.append("bullets must be 1-5 strings")
    if not isinstance(steps, list) or not all(isinstance(s, str) for s in steps):
        problems.append("next_steps must be a list of strings")
    if problems or not isinstance(bullets, list) or not isinstance(steps, list) or \
            not isinstance(title, str):
        return problems
    evidence = set(facts.get("evidence_ids", []))
    for b in bullets:
        if not _CITE.search(b):
            problems.append(f"bullet cites no evidence id: {b[:80]!r}")
    texts = [title, *bullets, *steps]
    for text in texts:
        for group in _CITE.findall(text):
            for eid in _ID.findall(group):
                if eid not in evidence:
                    problems.append(f"cites {eid}, not in the evidence")
    values = strings({k: v for k, v in facts.items() if k != "evidence_ids"})
    tokens = {t for v in values for t in re.split(r"[\s,;()\[\]`'\"=]+", v) if t}
    tokens |= {t.rstrip(":.") for t in list(tokens)}
    paths = {t for t in tokens if t.startswith("/")}
    techniques = {t for v in values for t in _TECHNIQUE.findall(v)}
    for text in texts:
        problems += _check(text, values, tokens, paths, techniques)
    return problems


def _check(text: str, values: list[str], tokens: set[str], paths: set[str],
           techniques: set[str]) -> list[str]:
    out = []
    for m in _URL.finditer(text):
        host = m.group(1).lower()
        if host not in REFERENCE_HOSTS and host not in tokens:
            out.append(f"links to {host}, not in the facts")
    text = _URL.sub(" ", text)
    for t in _TECHNIQUE.findall(text):
        if t not in techniques:
            out.append(f"names technique {t}, not in the facts")
    for ip in _IPV4.findall(text) + _IPV6.findall(text):
        if ip not in tokens and not any(tok.startswith(ip + ":") for tok in tokens):
            out.append(f"names address {ip}, not in the facts")
    for p in _PATH.findall(text):
        p = p.rstrip(".:")
        if p and p not in paths and not any(f.startswith(p.rstrip("/") + "/") for f in paths):
            out.append(f"names path {p}, not in the facts")
    bare = _PATH.sub(" ", text)
    for d in _DOMAIN.findall(bare):
        if d not in tokens and d.lower() not in tokens and d.rstrip(".") not in tokens:
            out.append(f"names {d}, not in the facts")
    for name in _K8S_NAME.findall(bare):
        if re.search(r"\d", name) and re.search(r"[a-z]", name) and \
                not re.fullmatch(r"[\d-]+t[\d:.-]*z?", name) and \
                name not in tokens and not any(name in v for v in values):
            out.append(f"names {name}, not in the facts")
    for quoted in _TICKS.findall(text):
        if not any(quoted in v for v in values):
            out.append(f"quotes `{quoted}`, not in the facts")
    for user in _USER.findall(text):
        if user.lower() not in _NOT_USERS and user not in tokens:
            out.append(f"names user {user}, not in the facts")
    return out
