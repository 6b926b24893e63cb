"""Runtime risk context (docs/risk.md). Placeholder until the risk-packages skeleton merges."""
