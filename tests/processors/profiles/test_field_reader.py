"""FieldReader: attributes read by remembered position must equal a full pass, whatever the
records before them looked like (processors/profiles/observe.py)."""

from __future__ import annotations

from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from otelguard import semconv as S
from otelguard.otlp.messages import set_any
from otelguard.processors.profiles.observe import FieldReader, Getters, getters_for

WANTED = frozenset({S.NETWORK_PEER_ADDRESS, S.NETWORK_PEER_PORT, S.PEER_K8S_SERVICE_NAME,
                    S.PROCESS_EXECUTABLE_PATH})
CONNECT = S.EV_NETWORK_CONNECT


def getters() -> Getters:
    g = getters_for(WANTED)
    assert g is not None
    return g


def record(*attrs: tuple[str, object]) -> LogRecord:
    rec = LogRecord(event_name=CONNECT)
    for key, value in attrs:
        kv = rec.attributes.add()
        kv.key = key
        set_any(kv.value, value)  # type: ignore[arg-type]
    return rec


def full_pass(rec: LogRecord) -> dict[str, object]:
    return FieldReader({CONNECT: getters()}, {}).read(rec, CONNECT)


def test_a_wanted_key_where_an_earlier_record_of_the_same_length_had_another_is_read() -> None:
    reader = FieldReader({CONNECT: getters()}, {})
    # the same length and the same wanted keys in the same places, but the first has an
    # unwanted key where the second has the peer's Service name (the enricher's peer lookup)
    first = record((S.PROCESS_EXECUTABLE_PATH, "/usr/bin/curl"),
                   (S.NETWORK_PEER_ADDRESS, "10.0.0.9"), (S.NETWORK_PEER_PORT, 80),
                   ("otelguard.other", "x"))
    second = record((S.PROCESS_EXECUTABLE_PATH, "/usr/bin/curl"),
                    (S.NETWORK_PEER_ADDRESS, "10.0.0.7"), (S.NETWORK_PEER_PORT, 5432),
                    (S.PEER_K8S_SERVICE_NAME, "secrets-db"))
    assert reader.read(first, CONNECT) == full_pass(first)
    got = reader.read(second, CONNECT)
    assert got == full_pass(second)
    assert got[S.PEER_K8S_SERVICE_NAME] == "secrets-db"
    # and back: the unwanted key again is not taken for the Service name
    assert reader.read(first, CONNECT) == full_pass(first)


def test_records_with_every_wanted_key_keep_the_positional_path() -> None:
    reader = FieldReader({CONNECT: getters()}, {})
    rec = record((S.PROCESS_EXECUTABLE_PATH, "/bin/x"), (S.NETWORK_PEER_ADDRESS, "10.0.0.7"),
                 (S.NETWORK_PEER_PORT, 1), ("otelguard.other", "y"),
                 (S.PEER_K8S_SERVICE_NAME, "db"))
    assert reader.read(rec, CONNECT) == full_pass(rec)
    ((layout,),) = reader._layouts.values()
    assert layout[1] is None  # complete: no other position needs a look
    assert reader.read(rec, CONNECT) == full_pass(rec)
