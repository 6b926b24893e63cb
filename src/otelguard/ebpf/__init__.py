"""Sensors: BPF programs on tracepoints, their decoders, the process table and container identity.

Only :mod:`otelguard.ebpf.loader` imports ``bcc`` (lazily), so everything else here imports and
unit-tests without root.
"""
