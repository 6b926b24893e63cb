"""The sender MAC (transport/identity.py): canonical encoding, what it covers, token files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from otelguard import semconv
from otelguard.config import InvalidFields
from otelguard.transport.identity import (
    NodeTokens,
    ResourceSigner,
    SenderIdentity,
    canonical,
    mac,
    nonce_minute,
    read_node_tokens,
)

NOW = 1_800_000_000.0
MINUTE = int(NOW // 60)
FIELDS = ("node-a", "c" * 64, "7d0c6a1e-52a4-4c51-9c61-0d2f5b3a9e10", "node-a", f"{MINUTE}.1")


def test_canonical_encoding_is_stable() -> None:
    # Pinned bytes: a change of the encoding breaks every deployed agent/processor pair.
    assert canonical("n", "c", "", "h", "1.2") == (
        b"otelguard-sender-v1" + b"\x00\x00\x00\x01n" + b"\x00\x00\x00\x01c" + b"\x00\x00\x00\x00"
        + b"\x00\x00\x00\x01h" + b"\x00\x00\x00\x031.2")
    assert mac(b"k", "n", "c", "", "h", "1.2") == (
        "60c7c3cb8cbfeaf6cbaa9d4eb23bf60a646dd10577de397c0350896bed60a7f6")


def test_field_boundaries_cannot_shift() -> None:
    assert canonical("ab", "c", "", "", "") != canonical("a", "bc", "", "", "")
    assert canonical("", "x", "", "", "") != canonical("", "", "x", "", "")


@pytest.mark.parametrize("index", range(5))
def test_any_covered_field_change_breaks_the_mac(index: int) -> None:
    good = mac(b"token-a", *FIELDS)
    changed = list(FIELDS)
    changed[index] = changed[index] + "x"
    assert mac(b"token-a", *changed) != good


def _tokens(tmp_path: Path, text: str, clock: float = NOW) -> NodeTokens:
    path = tmp_path / "node-tokens"
    path.write_text(text)
    return NodeTokens(str(path), 3600, clock=lambda: clock)


def test_verify_accepts_the_right_token_only(tmp_path: Path) -> None:
    tokens = _tokens(tmp_path, "node-a token-a\nnode-b token-b\n")
    given = mac(b"token-a", *FIELDS)
    assert tokens.verify(*FIELDS, given)
    assert not tokens.verify(*FIELDS, mac(b"token-b", *FIELDS))  # another node's token
    assert not tokens.verify(*FIELDS, mac(b"wrong", *FIELDS))
    other_node = ("node-b",) + FIELDS[1:]
    assert not tokens.verify(*other_node, given)  # claims node-b with node-a's MAC
    assert not tokens.verify(*FIELDS, "")
    assert not tokens.verify("node-c", *FIELDS[1:], mac(b"token-a", "node-c", *FIELDS[1:]))


def test_stale_or_malformed_nonce_fails(tmp_path: Path) -> None:
    tokens = _tokens(tmp_path, "node-a token-a\n")
    for nonce in (f"{MINUTE - 61}.1", f"{MINUTE + 61}.1", "x.1", str(MINUTE), ""):
        fields = FIELDS[:4] + (nonce,)
        assert not tokens.verify(*fields, mac(b"token-a", *fields)), nonce
    fields = FIELDS[:4] + (f"{MINUTE - 59}.9",)
    assert tokens.verify(*fields, mac(b"token-a", *fields))
    assert nonce_minute("12.3") == 12


def test_token_file_is_reread_and_a_directory_works(tmp_path: Path) -> None:
    tokens = _tokens(tmp_path, "node-a old\n")
    assert tokens.verify(*FIELDS, mac(b"old", *FIELDS))
    path = tmp_path / "node-tokens"
    path.write_text("node-a old\nnode-a new\n")  # rotation overlap: both accepted
    os.utime(path, ns=(1, 1))
    assert tokens.verify(*FIELDS, mac(b"new", *FIELDS))
    assert tokens.verify(*FIELDS, mac(b"old", *FIELDS))
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "node-a").write_text("dir-token\n")
    (secret / "..data").mkdir()
    assert read_node_tokens(str(secret)) == {"node-a": b"dir-token"}


def test_signer_stamps_with_its_node_token(tmp_path: Path) -> None:
    (tmp_path / "node-a").write_text("token-a\n")
    cfg = SenderIdentity(node_token_file=str(tmp_path / "{node}"))
    path = cfg.token_path("node-a")
    assert path == str(tmp_path / "node-a")
    signer = ResourceSigner("node-a", path, clock=lambda: NOW)
    nonce = signer.next_nonce()
    assert nonce == f"{MINUTE}.1" and signer.next_nonce() == f"{MINUTE}.2"
    attrs = {semconv.CONTAINER_ID: FIELDS[1], semconv.K8S_POD_UID: FIELDS[2],
             semconv.HOST_NAME: "node-a"}
    stamp = dict(signer.stamp(attrs, nonce))
    assert stamp[semconv.SENDER_NODE] == "node-a"
    assert stamp[semconv.SENDER_MAC] == mac(b"token-a", *FIELDS)
    missing = ResourceSigner("node-a", str(tmp_path / "absent"))
    assert missing.stamp(attrs, nonce) == []  # no token: unsigned, never a crash


def test_config_rejects_an_empty_path() -> None:
    with pytest.raises(InvalidFields):
        SenderIdentity(node_token_file=" ")
    assert SenderIdentity().token_path("n") is None
