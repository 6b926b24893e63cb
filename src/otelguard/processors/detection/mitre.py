"""Rule tags -> MITRE ATT&CK technique ids and tactic names.

Falco tags carry both ``mitre_<tactic>`` words and ids (``T1059.004``, ``TA0003``); we emit
technique ids as-is and tactic names in ATT&CK's snake-case form (``credential_access``), taking
tactic ids through the table below. Pure and cheap: computed once per rule at load time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TACTICS_BY_ID = {
    "TA0043": "reconnaissance", "TA0042": "resource_development", "TA0001": "initial_access",
    "TA0002": "execution", "TA0003": "persistence", "TA0004": "privilege_escalation",
    "TA0005": "defense_evasion", "TA0006": "credential_access", "TA0007": "discovery",
    "TA0008": "lateral_movement", "TA0009": "collection", "TA0011": "command_and_control",
    "TA0010": "exfiltration", "TA0040": "impact",
}
TACTIC_NAMES = frozenset(TACTICS_BY_ID.values())
_TECHNIQUE = re.compile(r"^T\d{4}(\.\d{3})?$")
_TACTIC_ID = re.compile(r"^TA\d{4}$")


@dataclass(frozen=True)
class Mitre:
    technique_ids: tuple[str, ...]
    tactic_names: tuple[str, ...]

    @property
    def primary_tactic(self) -> str:
        return self.tactic_names[0] if self.tactic_names else ""

    def technique_url(self) -> str:
        """ATT&CK page of the first technique ('' when none): the rule's reference."""
        if not self.technique_ids:
            return ""
        return "https://attack.mitre.org/techniques/" + self.technique_ids[0].replace(".", "/") + "/"


def from_tags(tags: tuple[str, ...]) -> Mitre:
    techniques: list[str] = []
    tactics: list[str] = []
    for raw in tags:
        tag = raw.strip()
        upper = tag.upper()
        if _TECHNIQUE.match(upper):
            techniques.append(upper)
        elif _TACTIC_ID.match(upper):
            name = TACTICS_BY_ID.get(upper)
            if name and name not in tactics:
                tactics.append(name)
        elif tag.lower().startswith("mitre_"):
            name = tag.lower()[len("mitre_"):]
            if name == "command_and_control" or name in TACTIC_NAMES:
                if name not in tactics:
                    tactics.append(name)
    return Mitre(tuple(dict.fromkeys(techniques)), tuple(tactics))
