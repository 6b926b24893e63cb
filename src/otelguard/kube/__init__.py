"""Kubernetes API access shared by the enricher, profiles and response (docs/architecture.md#layers)."""
