"""The consortium roster every site pins, and the sites' Ed25519 identity keys.

A roster is a TOML file the consortium distributes::

    [[site]]
    name = "hospital-a"                       # the name in its certificate (CN) and in tasks
    identity_key = "<64 hex digits>"          # its Ed25519 identity public key (fedgwas-site init prints it)
    certificate_sha256 = "<64 hex digits>"    # optional: SHA-256 of its TLS certificate (DER)

A site signs the ephemeral keys of every secure-aggregation round with its identity key; peers verify
the signature against the roster and refuse a task naming anyone who is not in it. The identity key
is long-term (it authenticates, it never encrypts), so forward secrecy follows from the ephemeral
round keys (:mod:`engine.privacy.secure_round`).
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from engine.errors import ConfigError, InputError, PrivacyError

IDENTITY_KEY_BYTES = 32
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class RosterEntry:
    """One consortium site: its name, identity public key (32 raw bytes) and optional certificate pin."""

    name: str
    identity_key: bytes
    certificate_sha256: str | None = None

    @property
    def fingerprint(self) -> str:
        return identity_fingerprint(self.identity_key)


@dataclass(frozen=True)
class Roster:
    """The pinned roster (see the module docstring); ``sha256`` identifies the file's content."""

    entries: tuple[RosterEntry, ...]
    sha256: str = ""

    def __post_init__(self) -> None:
        names = [e.name for e in self.entries]
        if len(set(names)) != len(names):
            raise ConfigError(f"the roster lists a site twice: {sorted(names)}")
        keys = [e.identity_key for e in self.entries]
        if len(set(keys)) != len(keys):
            raise ConfigError("the roster gives two sites the same identity key")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(e.name for e in self.entries)

    def get(self, name: str) -> RosterEntry | None:
        return next((e for e in self.entries if e.name == name), None)

    def require(self, site: str, name: str) -> RosterEntry:
        """The entry of ``name``; PrivacyError (from ``site``'s point of view) if it is not a member."""
        entry = self.get(name)
        if entry is None:
            raise PrivacyError(f"site {site!r} refuses a task naming {name!r}, which is not in its consortium "
                               f"roster ({len(self.entries)} sites)")
        return entry


def identity_fingerprint(public_key: bytes) -> str:
    """SHA-256 hex of a raw identity public key (what operators compare out of band)."""
    return hashlib.sha256(public_key).hexdigest()


def generate_identity_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def save_identity_key(key: Ed25519PrivateKey, path: Path) -> None:
    """Write ``key`` as raw 32 bytes, owner-only (0600), refusing to overwrite."""
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                            serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(raw)


def load_identity_key(path: Path) -> Ed25519PrivateKey:
    """Read a raw 32-byte Ed25519 private key written by :func:`save_identity_key`."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read identity key {str(path)!r}: {exc.strerror}") from exc
    if len(raw) != IDENTITY_KEY_BYTES:
        raise InputError(f"identity key {str(path)!r} has {len(raw)} bytes, expected 32 (raw Ed25519)")
    return Ed25519PrivateKey.from_private_bytes(raw)


def public_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def sign(key: Ed25519PrivateKey, message: bytes) -> bytes:
    return key.sign(message)


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True iff ``signature`` is ``public_key``'s Ed25519 signature of ``message``."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def certificate_sha256(pem: bytes) -> str:
    """SHA-256 hex of a PEM certificate's DER encoding (the roster's ``certificate_sha256``)."""
    from cryptography import x509

    return hashlib.sha256(x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)).hexdigest()


def load_roster(path: Path) -> Roster:
    """Read and validate a roster file; errors name the file, the entry and the key."""
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"roster {str(path)!r} cannot be read: {exc.strerror}") from None
    try:
        raw = tomllib.loads(text.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"roster {str(path)!r} is not valid TOML: {exc}") from None
    unknown = sorted(set(raw) - {"site"})
    sites = raw.get("site", [])
    if unknown or not isinstance(sites, list) or not sites:
        raise ConfigError(f"roster {str(path)!r} must hold [[site]] tables only (found {unknown or 'none'})")
    entries = []
    for number, site in enumerate(sites, start=1):
        where = f"roster {str(path)!r} [[site]] #{number}"
        if not isinstance(site, dict) or sorted(set(site) - {"name", "identity_key", "certificate_sha256"}):
            raise ConfigError(f"{where}: keys must be name, identity_key and optionally certificate_sha256")
        name, key, cert = site.get("name"), site.get("identity_key"), site.get("certificate_sha256")
        if not isinstance(name, str) or not name or any(c.isspace() for c in name):
            raise ConfigError(f"{where}: name must be a non-empty word, got {name!r}")
        if not isinstance(key, str) or not _HEX64.match(key):
            raise ConfigError(f"{where} ({name}): identity_key must be 64 lowercase hex digits, got {key!r}")
        if cert is not None and (not isinstance(cert, str) or not _HEX64.match(cert)):
            raise ConfigError(f"{where} ({name}): certificate_sha256 must be 64 lowercase hex digits, got {cert!r}")
        entries.append(RosterEntry(name, bytes.fromhex(key), cert))
    return Roster(tuple(entries), hashlib.sha256(text).hexdigest())


def render_roster(entries: Iterable[RosterEntry]) -> str:
    """TOML text of a roster (what ``fedgwas local`` and ``fedgwas-site roster`` write)."""
    lines: list[str] = []
    for entry in entries:
        lines += ["[[site]]", f'name = "{entry.name}"', f'identity_key = "{entry.identity_key.hex()}"']
        if entry.certificate_sha256:
            lines.append(f'certificate_sha256 = "{entry.certificate_sha256}"')
        lines.append("")
    return "\n".join(lines)
