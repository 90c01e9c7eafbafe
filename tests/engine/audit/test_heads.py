"""Signed ledger heads (engine/audit/heads.py): signatures, domain separation, keys, extension."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from engine.audit.heads import HeadRecord, SignedHead, cosign, create_signing_key, extension_problem, head_message, \
    load_signing_key, read_public_key, sign_head
from engine.errors import ConfigError, HeadError

HASH_A, HASH_B = "a" * 64, "b" * 64


def test_a_signed_head_verifies_and_any_change_breaks_it() -> None:
    key = Ed25519PrivateKey.generate()
    head = sign_head(key, "site1", 7, HASH_A, "2026-01-01T00:00:00+00:00")
    assert head.verify() is head
    for change in ({"site": "site2"}, {"seq": 8}, {"hash": HASH_B}, {"time": "2026-01-01T00:00:01+00:00"},
                   {"public_key": bytes(32 - 1) + b"\x01"}):
        with pytest.raises(HeadError, match="does not verify"):
            dataclasses.replace(head, **change).verify()
    assert SignedHead.from_dict(head.to_dict()) == head


def test_the_encoding_is_domain_separated_and_unambiguous() -> None:
    # Length prefixes: moving bytes between the site name and the time gives another message.
    assert head_message("ab", 1, HASH_A, "c") != head_message("a", 1, HASH_A, "bc")
    key = Ed25519PrivateKey.generate()
    head = sign_head(key, "site1", 1, HASH_A)
    cosignature = cosign(key, head)
    # A witness co-signature made with the same key is not a valid site signature on anything.
    with pytest.raises(HeadError):
        dataclasses.replace(head, signature=cosignature.signature).verify()
    assert cosignature.verify(head) is cosignature
    with pytest.raises(HeadError, match="co-signature"):
        cosignature.verify(dataclasses.replace(head, seq=2))
    with pytest.raises(HeadError, match="64-hex-digit"):
        head_message("s", 1, "xyz", "t")


def test_keys_are_owner_only_never_overwritten_and_refused_when_readable(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "ledger-signing.key"
    assert create_signing_key(path)
    first = path.read_bytes()
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert not create_signing_key(path) and path.read_bytes() == first
    key = load_signing_key(path)
    assert read_public_key(Path(f"{path}.pub")) == sign_head(key, "s", 0, "0" * 64).public_key
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        load_signing_key(path)
    with pytest.raises(ConfigError, match="cannot be read"):
        load_signing_key(tmp_path / "missing.key")


def test_extension_names_rollbacks_and_rewrites(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    hashes = [f"{k:064x}" for k in range(1, 6)]
    assert extension_problem(hashes, sign_head(key, "s", 3, hashes[2]), "the witness") == ""
    assert extension_problem(hashes, sign_head(key, "s", 0, "0" * 64), "the witness") == ""
    assert "rolled back from seq 7 to 5" in extension_problem(hashes, sign_head(key, "s", 7, HASH_A), "the witness")
    assert "entry 4 differs" in extension_problem(hashes, sign_head(key, "s", 4, HASH_A), "the witness")
    record = HeadRecord(sign_head(key, "s", 5, hashes[4]))
    record.write(tmp_path / "head.json")
    assert HeadRecord.read(tmp_path / "head.json") == record
    assert HeadRecord.read(tmp_path / "none.json") is None
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(HeadError, match="not a signed ledger head"):
        HeadRecord.read(tmp_path / "bad.json")
