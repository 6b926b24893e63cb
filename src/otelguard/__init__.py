"""otelguard: runtime security signals from eBPF, landed in the OpenTelemetry stack."""

__version__ = "0.1.0"
