"""What the story says about why a step matters: ATT&CK tactic order and technique names, CIS
Kubernetes Benchmark references for detections that concern configuration, and next steps per
tactic. Data, not logic; pure and cheap (looked up once per incident version).

Technique names are ATT&CK's (enterprise matrix) for the techniques the shipped rules and the
profiles stage tag; an id not listed is cited by id and link only. CIS numbers are those of
the CIS Kubernetes Benchmark v1.8 (section 5, policies).
"""

from __future__ import annotations

# ATT&CK enterprise tactics in kill-chain order (the order of techniques in an incident)
TACTIC_ORDER = (
    "reconnaissance", "resource_development", "initial_access", "execution", "persistence",
    "privilege_escalation", "defense_evasion", "credential_access", "discovery",
    "lateral_movement", "collection", "command_and_control", "exfiltration", "impact",
)
TACTIC_RANK = {name: i for i, name in enumerate(TACTIC_ORDER)}

TECHNIQUES = {
    "T1055.008": "Process Injection: Ptrace System Calls",
    "T1059": "Command and Scripting Interpreter",
    "T1059.004": "Command and Scripting Interpreter: Unix Shell",
    "T1068": "Exploitation for Privilege Escalation",
    "T1070": "Indicator Removal",
    "T1071": "Application Layer Protocol",
    "T1071.004": "Application Layer Protocol: DNS",
    "T1105": "Ingress Tool Transfer",
    "T1204.002": "User Execution: Malicious File",
    "T1485": "Data Destruction",
    "T1547.006": "Boot or Logon Autostart Execution: Kernel Modules and Extensions",
    "T1552": "Unsecured Credentials",
    "T1552.001": "Unsecured Credentials: Credentials In Files",
    "T1552.005": "Unsecured Credentials: Cloud Instance Metadata API",
    "T1555": "Credentials from Password Stores",
    "T1557.002": "Adversary-in-the-Middle: ARP Cache Poisoning",
    "T1562.001": "Impair Defenses: Disable or Modify Tools",
    "T1565": "Data Manipulation",
    "T1571": "Non-Standard Port",
    "T1611": "Escape to Host",
    "T1620": "Reflective Code Loading",
    "T1622": "Debugger Evasion",
    "T1656": "Impersonation",
}


def technique_url(technique: str) -> str:
    return "https://attack.mitre.org/techniques/" + technique.replace(".", "/") + "/"


def tactic_title(tactic: str) -> str:
    """``command_and_control`` -> ``command and control``."""
    return tactic.replace("_", " ")


# (id, recommendation) of the CIS Kubernetes Benchmark v1.8 for a configuration fact
CIS = {
    "privileged": ("5.2.2", "Minimize the admission of privileged containers"),
    "host_pid": ("5.2.3", "Minimize the admission of containers wishing to share the host "
                          "process ID namespace"),
    "host_network": ("5.2.5", "Minimize the admission of containers wishing to share the host "
                              "network namespace"),
    "added_capabilities": ("5.2.9", "Minimize the admission of containers with added "
                                    "capabilities"),
    "service_account_token": ("5.1.6", "Ensure that Service Account Tokens are only mounted "
                                       "where necessary"),
    "root": ("5.2.7", "Minimize the admission of root containers"),
}
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

# What to check and what would contain it, per tactic (the story's "Next steps")
NEXT_STEPS = {
    "execution": "Check whether {proc} belongs in {image} (compare with the image's own files); "
                 "find who or what started {parent}.",
    "persistence": "Look for files written or changed by the process tree and remove them; "
                   "rebuild the container from its image rather than repair it.",
    "privilege_escalation": "Check the pod's securityContext and capabilities; drop what the "
                            "workload does not need.",
    "defense_evasion": "Capture the process (its memory and /proc/<pid>/exe) before it exits; "
                       "the executable may exist only in memory or a deleted file.",
    "credential_access": "Rotate every credential {what} could read, and check where those "
                         "credentials were used since {since}.",
    "discovery": "Review what the process tree listed or queried; expect a next step.",
    "lateral_movement": "Check the peers the process tree reached for new processes.",
    "collection": "Find what was gathered and where it was staged.",
    "command_and_control": "Block egress to {peer} with a NetworkPolicy and look for other "
                           "workloads that reached it.",
    "exfiltration": "Estimate what left through {peer}; block it.",
    "impact": "Check the data and services the process tree touched; restore from backup.",
}
CONTAIN = ("Contain: isolate the pod with a deny-all NetworkPolicy selecting its labels, keep "
           "it for forensics (do not delete it yet), then redeploy from a known-good image.")
CONTAIN_HOST = ("Contain: stop the service or kill the process tree after capturing it, and "
                "check the host for persistence (systemd units, cron, authorized_keys).")
