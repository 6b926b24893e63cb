"""Policy as code: one directory tree of rules, exceptions, profiles and responses, checked,
tested by replay and loaded as one revision (docs/policy.md)."""
