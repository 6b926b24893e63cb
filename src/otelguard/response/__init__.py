"""Response with a human in the loop: policies, requests, actions, audit (docs/architecture.md#response).

Layer: imports only the bottom units (otlp, semconv, telemetry, config) and ``kube``; the
processors' ``response`` stage and the agent's node executor import it.
"""
