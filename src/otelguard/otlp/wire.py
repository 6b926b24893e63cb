"""Protobuf wire primitives: the one varint encoder the hand-encoded OTLP paths share
(exporter/wire.py's record encoder, the OTLP/JSON codec's JSON -> wire step)."""

from __future__ import annotations

U64 = 0xFFFFFFFFFFFFFFFF
_SMALL = [bytes((i,)) for i in range(0x80)]


def varint(n: int) -> bytes:
    """Base-128 varint; a negative ``n`` is encoded as its 64-bit two's complement, as protobuf
    encodes negative int32/int64. Values up to 2^28 are unrolled (the hot path's lengths, ports,
    pids); larger ones (durations in ns) take the 28 low bits unrolled and recurse."""
    if n < 0x80:
        return _SMALL[n] if n >= 0 else varint(n & U64)
    if n < 0x4000:
        return bytes((n & 0x7F | 0x80, n >> 7))
    if n < 0x200000:
        return bytes((n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14))
    if n < 0x10000000:
        return bytes((n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14 & 0x7F | 0x80, n >> 21))
    if n <= U64:
        return bytes((n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14 & 0x7F | 0x80,
                      n >> 21 & 0x7F | 0x80)) + varint(n >> 28)
    return varint(n & U64)  # wider than 64 bits: protobuf keeps the low 64


def field_len(tag: int, payload: bytes) -> bytes:
    """A length-delimited field (tag already shifted: (field << 3) | 2, one byte)."""
    n = len(payload)
    return (bytes((tag, n)) if n < 0x80 else bytes((tag,)) + varint(n)) + payload
