"""Events become OTLP: LogRecords per event, spans per process and connection, transports."""
