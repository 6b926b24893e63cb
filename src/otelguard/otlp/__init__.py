"""The bottom layer: OTLP messages and their encodings, shared by every other package.

- :mod:`~otelguard.otlp.messages`: typed access to OTLP protobufs in place (attributes, values,
  record iteration, counting).
- :mod:`~otelguard.otlp.jsoncodec`: OTLP/JSON as the specification defines it (the Collector
  file exporter's lines, OTLP/HTTP JSON bodies).
- :mod:`~otelguard.otlp.wire`: protobuf wire primitives (varints, length-delimited fields) for
  the hand-encoded hot paths.

It imports nothing of otelguard but :mod:`otelguard.semconv` (docs/architecture.md#layers).
"""
