"""dns.parse_query: real query layouts, and refusal (None, never an exception) of everything else."""

from __future__ import annotations

import string

from hypothesis import given, settings
from hypothesis import strategies as st

from otelguard.ebpf.dns import HEADER_LEN, DnsQuestion, build_query, parse_query, qtype_name


def test_plain_query_name_type_and_id() -> None:
    q = parse_query(build_query("www.example.com", qtype=28, query_id=0xBEEF))
    assert q is not None
    assert (q.name, q.type_name, q.qtype, q.qclass, q.query_id) == (
        "www.example.com", "AAAA", 28, 1, 0xBEEF)
    assert q.question_count == 1 and not q.tcp_framed


def test_trailing_dot_and_case_are_kept_as_sent() -> None:
    q = parse_query(build_query("MiXeD.Example.ORG."))
    assert q is not None and q.name == "MiXeD.Example.ORG"


def test_root_name() -> None:
    q = parse_query(build_query(".", qtype=2))
    assert q is not None and q.name == "." and q.type_name == "NS"


def test_tcp_length_prefix() -> None:
    q = parse_query(build_query("tcp.example.net", qtype=16, tcp=True))
    assert q is not None and q.name == "tcp.example.net" and q.type_name == "TXT"
    assert q.tcp_framed


def test_unknown_qtype_uses_rfc3597_name() -> None:
    assert qtype_name(65280) == "TYPE65280"
    q = parse_query(build_query("x.test", qtype=65280))
    assert q is not None and q.type_name == "TYPE65280"


def test_dot_backslash_and_binary_bytes_are_escaped() -> None:
    label = b"a.b\\c\x00\xff"
    msg = bytes.fromhex("00010100000100000000 0000".replace(" ", "")) + bytes([len(label)]) + \
        label + b"\x03com\x00\x00\x01\x00\x01"
    q = parse_query(msg)
    assert q is not None
    assert q.name == "a\\.b\\\\c\\000\\255.com"


def test_compression_pointer_is_refused() -> None:
    header = bytes.fromhex("123401000001000000000000")
    # "www" then a pointer back into the header (a loop if followed)
    assert parse_query(header + b"\x03www\xc0\x0c\x00\x01\x00\x01") is None
    assert parse_query(header + b"\xc0\x0c\x00\x01\x00\x01") is None


def test_response_and_empty_question_section_are_refused() -> None:
    q = bytearray(build_query("example.com"))
    q[2] |= 0x80  # QR: response
    assert parse_query(bytes(q)) is None
    q = bytearray(build_query("example.com"))
    q[4:6] = b"\x00\x00"  # qdcount 0
    assert parse_query(bytes(q)) is None


def test_oversized_label_and_name_are_refused() -> None:
    header = bytes.fromhex("123401000001000000000000")
    assert parse_query(header + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01") is None
    long_name = (b"\x3f" + b"a" * 63) * 4 + b"\x00"  # 257 bytes on the wire > 255
    assert parse_query(header + long_name + b"\x00\x01\x00\x01") is None
    ok_name = (b"\x3f" + b"a" * 63) * 3 + b"\x3d" + b"a" * 61 + b"\x00"  # exactly 255
    q = parse_query(header + ok_name + b"\x00\x01\x00\x01")
    assert q is not None and len(q.name) == 253


def test_every_truncation_is_refused() -> None:
    full = build_query("truncated.example.com", qtype=1)
    assert parse_query(full) is not None
    for n in range(len(full)):
        assert parse_query(full[:n]) is None, n


def test_garbage_is_refused() -> None:
    for data in (b"", b"\x00", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\xff" * 512):
        assert parse_query(data) is None


_label = st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=1, max_size=63)


@settings(max_examples=300, deadline=None)
@given(st.lists(_label, min_size=1, max_size=4), st.integers(0, 65535), st.booleans())
def test_roundtrip_of_valid_names(labels: list[str], qtype: int, tcp: bool) -> None:
    name = ".".join(labels)
    q = parse_query(build_query(name, qtype=qtype, tcp=tcp))
    assert q is not None
    assert q.name == name and q.qtype == qtype


def _wire_name(name: str) -> bytes:
    r"""The wire form of a name in the parser's presentation form (``\.``, ``\\``, ``\DDD``
    undone), to hold a parsed name against the bytes it was read from."""
    if name == ".":
        return b"\x00"
    out, label, i = bytearray(), bytearray(), 0
    while i < len(name):
        c = name[i]
        if c == "\\" and name[i + 1].isdigit():
            label.append(int(name[i + 1:i + 4]))
            i += 4
            continue
        if c == "\\":
            label.append(ord(name[i + 1]))
            i += 2
            continue
        if c == ".":
            out += bytes([len(label)]) + label
            label = bytearray()
        else:
            label.append(ord(c))
        i += 1
    return bytes(out + bytes([len(label)]) + label + b"\x00")


def _assert_read_from(data: bytes, q: DnsQuestion) -> None:
    """``q`` is the first question of ``data``: its name and type are the bytes after the header."""
    assert all(0x21 <= ord(c) <= 0x7E for c in q.name), q.name  # escaped: safe to log
    start = (2 if q.tcp_framed else 0) + HEADER_LEN
    wire = _wire_name(q.name)
    assert data[start:start + len(wire)] == wire, (q.name, data[start:start + len(wire)])
    end = start + len(wire)
    assert (q.qtype, q.qclass) == (int.from_bytes(data[end:end + 2], "big"),
                                   int.from_bytes(data[end + 2:end + 4], "big"))


def test_wire_name_undoes_the_escapes() -> None:
    assert _wire_name("a\\.b\\\\c\\000\\255.com") == b"\x07a.b\\c\x00\xff\x03com\x00"
    assert _wire_name(".") == b"\x00"


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_never_raises(data: bytes) -> None:
    q = parse_query(data)
    if q is not None:
        assert q.name and len(q.name) <= 255 * 4  # escapes can grow the text, never unbounded
        assert 0 <= q.qtype <= 65535
        _assert_read_from(data, q)


@settings(max_examples=500, deadline=None)
@given(st.binary(min_size=1, max_size=40), st.integers(0, 200))
def test_fuzz_mutated_real_queries(patch: bytes, at: int) -> None:
    tcp = at % 2 == 0
    base = bytearray(build_query("mutated.example.com", tcp=tcp))
    at %= len(base)
    base[at:at + len(patch)] = patch
    q = parse_query(bytes(base))
    if q is not None:
        _assert_read_from(bytes(base), q)
    name_end = HEADER_LEN + len(b"\x07mutated\x07example\x03com\x00")
    if not tcp and (at + len(patch) <= 2 or at >= name_end):
        # only the query id, or only what follows the name, was overwritten: the name stands
        assert q is not None and q.name == "mutated.example.com"
