"""Signed ledger heads: a site's signature on "my ledger had ``seq`` entries ending in ``hash`` at ``time``".

A site's ledger is a hash chain (engine/audit/ledger.py): entry ``n``'s hash covers its content and
entry ``n - 1``'s hash, so the pair ``(seq, hash)`` of the last entry commits to the whole history.
After every append the site signs that pair with an Ed25519 key kept apart from the ledger
(``[keys] ledger_signing_key``), and the signed head leaves the site: in every task's final message to
the coordinator (which logs it) and, when configured, to a witness that co-signs it and keeps every
head it receives. Someone who later rewrites, truncates or deletes the ledger cannot take those heads
back; an auditor checks that the ledger still *extends* each of them (:func:`extension_problem`).

What is signed is a domain-separated, length-prefixed encoding (:func:`head_message`) of the site's
name, the sequence number, the head hash and the time, so a signature can never be replayed as a
signature on anything else (another site, another position, a witness co-signature). A witness
co-signs ``head_message || site signature || witness time`` under its own domain tag.

Keys are raw 32-byte Ed25519 private keys in their own owner-only (0600) file, never overwritten;
the public key travels with every head and is identified by :func:`key_id`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from engine.errors import ConfigError, HeadError

HEAD_DOMAIN = b"fedgwas-ledger-head-v1\x00"
COSIGN_DOMAIN = b"fedgwas-witness-cosignature-v1\x00"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _field(value: bytes) -> bytes:
    return struct.pack("<I", len(value)) + value


def head_message(site: str, seq: int, head_hash: str, time: str) -> bytes:
    """The exact bytes a site signs: domain tag, then site, seq (u64), hash (32 bytes) and time, each
    length-prefixed (so no two different heads encode alike)."""
    if seq < 0 or not _HEX64.match(head_hash):
        raise HeadError(f"a ledger head needs seq >= 0 and a 64-hex-digit hash, got seq {seq} hash {head_hash!r}")
    return (HEAD_DOMAIN + _field(site.encode()) + struct.pack("<Q", seq) + _field(bytes.fromhex(head_hash))
            + _field(time.encode()))


def key_id(public_key: bytes) -> str:
    """Short fingerprint of a raw Ed25519 public key (the first 16 hex digits of its SHA-256)."""
    return hashlib.sha256(public_key).hexdigest()[:16]


def _check_signature(public_key: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True)
class SignedHead:
    """A site's signed statement about its ledger.

    Attributes
    ----------
    site
        The site's name (as in its ledger entries and certificate).
    seq, hash
        Number of entries and the hash of the last one (``seq`` 0: the empty ledger, hash 64 zeros).
    time
        When it was signed (UTC, ISO 8601).
    public_key, signature
        Raw Ed25519 public key (32 bytes) and signature (64 bytes) over :func:`head_message`.
    """

    site: str
    seq: int
    hash: str
    time: str
    public_key: bytes
    signature: bytes

    @property
    def key_id(self) -> str:
        return key_id(self.public_key)

    def message(self) -> bytes:
        return head_message(self.site, self.seq, self.hash, self.time)

    def verify(self) -> "SignedHead":
        """Check the signature against the embedded key; raises :class:`HeadError` naming the head."""
        if not _check_signature(self.public_key, self.signature, self.message()):
            raise HeadError(f"the head of site {self.site!r} at seq {self.seq} has a signature that does not verify "
                            f"under key {self.key_id}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"site": self.site, "seq": self.seq, "hash": self.hash, "time": self.time,
                "public_key": self.public_key.hex(), "signature": self.signature.hex()}

    @classmethod
    def from_dict(cls, value: Any, where: str = "head") -> "SignedHead":
        """From :meth:`to_dict` output; raises :class:`HeadError` naming ``where`` on a malformed value."""
        try:
            return cls(str(value["site"]), int(value["seq"]), str(value["hash"]), str(value["time"]),
                       bytes.fromhex(value["public_key"]), bytes.fromhex(value["signature"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise HeadError(f"{where} is not a signed ledger head: {exc}") from None


@dataclass(frozen=True)
class Cosignature:
    """A witness's signature over a site's signed head, and when it received it."""

    witness_key: bytes
    time: str
    signature: bytes

    @property
    def key_id(self) -> str:
        return key_id(self.witness_key)

    def verify(self, head: SignedHead) -> "Cosignature":
        if not _check_signature(self.witness_key, self.signature, cosign_message(head, self.time)):
            raise HeadError(f"the witness co-signature on site {head.site!r}'s head at seq {head.seq} does not "
                            f"verify under witness key {self.key_id}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"witness_key": self.witness_key.hex(), "time": self.time, "signature": self.signature.hex()}

    @classmethod
    def from_dict(cls, value: Any, where: str = "co-signature") -> "Cosignature":
        try:
            return cls(bytes.fromhex(value["witness_key"]), str(value["time"]), bytes.fromhex(value["signature"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise HeadError(f"{where} is not a witness co-signature: {exc}") from None


def cosign_message(head: SignedHead, time: str) -> bytes:
    """The bytes a witness signs: its domain tag, the site's signed message and signature, its time."""
    return COSIGN_DOMAIN + _field(head.message()) + _field(head.signature) + _field(time.encode())


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def sign_head(key: Ed25519PrivateKey, site: str, seq: int, head_hash: str, time: str | None = None) -> SignedHead:
    """Sign ``(site, seq, head_hash, time)`` (``time`` defaults to now, UTC)."""
    time = now() if time is None else time
    signature = key.sign(head_message(site, seq, head_hash, time))
    return SignedHead(site, seq, head_hash, time, public_key_bytes(key), signature)


def cosign(key: Ed25519PrivateKey, head: SignedHead, time: str | None = None) -> Cosignature:
    """A witness's co-signature on a (verified) head."""
    time = now() if time is None else time
    return Cosignature(public_key_bytes(key), time, key.sign(cosign_message(head, time)))


def public_key_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def create_signing_key(path: Path) -> bool:
    """Write a new Ed25519 key (raw 32 bytes, 0600) at ``path`` and its public key at ``path.pub``,
    unless ``path`` exists (a key is never overwritten). Returns True when a key was created."""
    if path.exists():
        return False
    key = Ed25519PrivateKey.generate()
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(raw)
    Path(f"{path}.pub").write_text(public_key_bytes(key).hex() + "\n", encoding="utf-8")
    return True


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """Read a key written by :func:`create_signing_key`; refuses one that others may read."""
    try:
        mode = path.stat().st_mode
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"ledger signing key {str(path)!r} cannot be read: {exc.strerror}") from None
    if mode & 0o077:
        raise ConfigError(f"ledger signing key {str(path)!r} is readable by others (mode {mode & 0o777:o}); "
                          f"restrict it with: chmod 600 {path}")
    if len(raw) != 32:
        raise ConfigError(f"ledger signing key {str(path)!r} must hold a raw 32-byte Ed25519 key, has {len(raw)} bytes")
    return Ed25519PrivateKey.from_private_bytes(raw)


def read_public_key(path: Path) -> bytes:
    """A public key file (64 hex digits, as :func:`create_signing_key` writes ``KEY.pub``)."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"public key file {str(path)!r} cannot be read: {exc.strerror}") from None
    if not _HEX64.match(text):
        raise ConfigError(f"public key file {str(path)!r} must hold 64 hex digits (a raw Ed25519 public key)")
    return bytes.fromhex(text)


def extension_problem(hashes: Sequence[str], head: SignedHead, holder: str) -> str:
    """Why a ledger (its entry hashes in order, ``hashes[k]`` for seq ``k + 1``) does not extend ``head``
    held by ``holder`` ("" when it does: the ledger has at least ``head.seq`` entries and entry
    ``head.seq`` has the head's hash)."""
    if head.seq > len(hashes):
        return (f"rolled back from seq {head.seq} to {len(hashes)}: {holder} holds a head signed at {head.time} "
                f"for {head.seq} entries, the ledger has {len(hashes)}")
    if head.seq and hashes[head.seq - 1] != head.hash:
        return (f"entry {head.seq} differs from the head {holder} holds (signed at {head.time}, hash "
                f"{head.hash[:16]}...): entries up to {head.seq} were rewritten")
    return ""


@dataclass(frozen=True)
class HeadRecord:
    """The last head a site published (``[audit] published_head``, a small JSON file kept with the
    signing key, apart from the ledger), with the witness's co-signature when one was obtained."""

    head: SignedHead
    cosignature: Cosignature | None = None

    def write(self, path: Path) -> None:
        """Atomically replace ``path`` (write, fsync, rename)."""
        tmp = path.with_name(f"{path.name}.tmp")
        tmp.write_text(json.dumps({"head": self.head.to_dict(), "cosignature": None if self.cosignature is None
                                   else self.cosignature.to_dict()}, sort_keys=True), encoding="utf-8")
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        tmp.replace(path)

    @classmethod
    def read(cls, path: Path) -> "HeadRecord | None":
        """The record at ``path`` (``None`` when there is none yet); raises HeadError if it is malformed."""
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError) as exc:
            raise HeadError(f"published-head record {str(path)!r} cannot be read: {exc}") from None
        where = f"published-head record {str(path)!r}"
        cosignature = value.get("cosignature") if isinstance(value, dict) else None
        return cls(SignedHead.from_dict(value.get("head") if isinstance(value, dict) else None, where),
                   None if cosignature is None else Cosignature.from_dict(cosignature, where))
