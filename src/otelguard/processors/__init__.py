"""Collector-side processors working on OTLP protobufs only; never imports ebpf/ or exporter/."""
