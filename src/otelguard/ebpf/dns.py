"""DNS query parsing for payloads the network probe copies from user memory (pure, never raises).

The kernel sends us the first bytes (at most 512) a process wrote to a socket aimed at a DNS
port; this module pulls the first question out of them. It is fed by untrusted processes, so it
accepts only what a real query looks like and answers ``None`` for everything else: responses
(QR set), no question, labels over 63 bytes, names over 255 bytes, compression pointers (a
query's question is never compressed, and following pointers is how parsers loop forever), and
truncation anywhere. TCP framing (a two-byte length prefix) is recognised too.

Cost: pure Python over at most 512 bytes, about 3-5 µs per query.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

HEADER_LEN = 12
MAX_LABEL = 63
MAX_NAME = 255  # wire length, including the length bytes and the root label

QTYPE_NAMES: dict[int, str] = {
    1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 10: "NULL", 12: "PTR", 13: "HINFO", 15: "MX",
    16: "TXT", 17: "RP", 18: "AFSDB", 24: "SIG", 25: "KEY", 28: "AAAA", 29: "LOC", 33: "SRV",
    35: "NAPTR", 36: "KX", 37: "CERT", 39: "DNAME", 41: "OPT", 42: "APL", 43: "DS",
    44: "SSHFP", 45: "IPSECKEY", 46: "RRSIG", 47: "NSEC", 48: "DNSKEY", 49: "DHCID",
    50: "NSEC3", 51: "NSEC3PARAM", 52: "TLSA", 53: "SMIMEA", 55: "HIP", 59: "CDS",
    60: "CDNSKEY", 61: "OPENPGPKEY", 62: "CSYNC", 63: "ZONEMD", 64: "SVCB", 65: "HTTPS",
    99: "SPF", 108: "EUI48", 109: "EUI64", 249: "TKEY", 250: "TSIG", 251: "IXFR", 252: "AXFR",
    255: "ANY", 256: "URI", 257: "CAA",
}


@dataclass(frozen=True)
class DnsQuestion:
    """The first question of a query. ``name`` is presentation form without the final dot
    (``"."`` for the root); bytes outside printable ASCII are written ``\\DDD`` and a dot inside
    a label ``\\.`` (as dig does), so the text is unambiguous and safe to log."""

    name: str
    qtype: int
    qclass: int
    query_id: int
    question_count: int
    tcp_framed: bool = False

    @property
    def type_name(self) -> str:
        return qtype_name(self.qtype)


def qtype_name(qtype: int) -> str:
    """Mnemonic of a QTYPE; unknown ones as ``TYPE<n>`` (RFC 3597)."""
    return QTYPE_NAMES.get(qtype) or f"TYPE{qtype}"


def _label_text(raw: bytes) -> str:
    out = []
    for b in raw:
        if b == 0x2E or b == 0x5C:  # "." and "\" inside a label
            out.append("\\" + chr(b))
        elif 0x21 <= b <= 0x7E:
            out.append(chr(b))
        else:
            out.append(f"\\{b:03d}")
    return "".join(out)


def _parse_plain(data: bytes) -> Optional[DnsQuestion]:
    if len(data) < HEADER_LEN + 5:  # header + root name + qtype + qclass
        return None
    flags = int.from_bytes(data[2:4], "big")
    if flags & 0x8000:  # QR: a response, not a query
        return None
    qdcount = int.from_bytes(data[4:6], "big")
    if qdcount == 0:
        return None
    pos = HEADER_LEN
    labels: list[str] = []
    wire_len = 0
    while True:
        if pos >= len(data):
            return None
        length = data[pos]
        if length & 0xC0:  # compression pointer (0xC0) or reserved label types
            return None
        pos += 1
        wire_len += 1 + length
        if wire_len > MAX_NAME:
            return None
        if length == 0:
            break
        if pos + length > len(data):
            return None
        labels.append(_label_text(data[pos:pos + length]))
        pos += length
    if pos + 4 > len(data):
        return None
    qtype = int.from_bytes(data[pos:pos + 2], "big")
    qclass = int.from_bytes(data[pos + 2:pos + 4], "big")
    return DnsQuestion(
        name=".".join(labels) if labels else ".", qtype=qtype, qclass=qclass,
        query_id=int.from_bytes(data[0:2], "big"), question_count=qdcount,
    )


def parse_query(data: bytes) -> Optional[DnsQuestion]:
    """The first question of a DNS query message (UDP, or TCP with its length prefix)."""
    try:
        if len(data) >= 2 and int.from_bytes(data[:2], "big") >= len(data) - 2:
            # maybe TCP: the prefix announces the message length (the copy may be cut short).
            # Tried first: a framed query also parses as a (nonsense) plain one. A plain query
            # does not parse framed (its ANCOUNT, read as QDCOUNT, is 0).
            framed = _parse_plain(data[2:])
            if framed is not None:
                return DnsQuestion(framed.name, framed.qtype, framed.qclass, framed.query_id,
                                   framed.question_count, tcp_framed=True)
        return _parse_plain(data)
    except (IndexError, ValueError):  # defensive: the checks above should make these impossible
        return None


def build_query(name: str, qtype: int = 1, query_id: int = 0x1234, tcp: bool = False) -> bytes:
    """A standard recursive query for ``name`` (tests and examples; labels must be ASCII)."""
    out = bytearray(query_id.to_bytes(2, "big") + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00")
    for label in name.strip(".").split("."):
        if label:
            raw = label.encode("ascii")
            out.append(len(raw))
            out += raw
    out += b"\x00" + qtype.to_bytes(2, "big") + b"\x00\x01"
    if tcp:
        return len(out).to_bytes(2, "big") + bytes(out)
    return bytes(out)
