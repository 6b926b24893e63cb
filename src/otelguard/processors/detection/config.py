"""The ``falco_rules`` stage's config: frozen dataclasses whose defaults are the default config.

Loaded with the one config loader, :mod:`otelguard.config` (unknown keys are errors, every problem
reported with its dotted path and file:line)::

    processors:
      - type: falco_rules
        config:
          rules: [/etc/otelguard/falco_rules.yaml, /etc/otelguard/local_rules.yaml]
          disabled_rules: ["Terminal shell in container", "Read sensitive file *"]
          disabled_tags: [mitre_discovery]
          append_output: "pod=%k8s.pod.name"
          min_priority: notice
          state: {socket_window_seconds: 300, max_processes: 20000}
"""

from __future__ import annotations

from dataclasses import dataclass, field

from otelguard.config import Checks
from otelguard.processors.detection.ruleset import Priority
from otelguard.processors.detection.state import StateLimits


# The ``state:`` section is the engine's own limits type (validated in its __post_init__).
StateConfig = StateLimits


@dataclass(frozen=True)
class Config:
    """``rules`` empty = the packaged default: Falco's stable rules + otelguard's own."""

    # Rule files, loaded in order (later ones may append/override); a directory stands for its
    # *.yaml/*.yml files in name order (a ConfigMap volume). Re-read live on change or SIGHUP.
    rules: tuple[str, ...] = ()
    # Site rule files or directories loaded after ``rules`` (after the packaged default when
    # ``rules`` is empty), so they can append to and override it; reloaded like ``rules``.
    local_rules: tuple[str, ...] = ()
    # Rule names (``*`` wildcards) not to run, as Falco's ``-D`` / ``rules: [disable: {rule}]``;
    # an entry that matches no loaded rule is an error.
    disabled_rules: tuple[str, ...] = ()
    disabled_tags: tuple[str, ...] = ()  # rules with any of these tags do not run (Falco's -T)
    # Rule names (``*`` wildcards) to run even when disabled above or ``enabled: false`` in
    # their file (Falco's ``rules: [enable: {rule}]``); applied after the disables.
    enabled_rules: tuple[str, ...] = ()
    enabled_tags: tuple[str, ...] = ()  # rules with any of these tags run (after the disables)
    # Text with %fields appended to every rule's output (Falco's append_output / -p).
    append_output: str = ""
    min_priority: str = "debug"  # rules less severe than this are not loaded
    state: StateConfig = field(default_factory=StateConfig)
    # A policy tree (docs/policy.md): its rules/ with its unexpired exceptions/ are the rules
    # (not with ``rules`` / ``local_rules``); the tree must validate as a whole, and its
    # revision names the rule set and is stamped on each detection. Reloaded like ``rules``.
    policy_dir: str = ""

    def __post_init__(self) -> None:
        checks = Checks()
        if self.policy_dir and (self.rules or self.local_rules):
            checks.add("policy_dir", "the tree's rules/ are the rules: not with rules or "
                       "local_rules")
        try:
            Priority.parse(self.min_priority)
        except KeyError:
            checks.add("min_priority", f"unknown priority {self.min_priority!r} (one of "
                       + ", ".join(p.name.lower() for p in Priority) + ")")
        checks.done()
