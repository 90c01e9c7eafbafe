"""Pairwise-mask secure aggregation (Bonawitz et al. 2017, semi-honest, without secret sharing).

Each site holds a long-term X25519 key pair. For every pair of participating sites (i, j) both derive
the same 32-byte pair key from X25519(i, j) with HKDF-SHA256; a keyed ChaCha20 stream, bound by HKDF
to (study, round, block, participant set), yields one 128-bit mask per statistic. The site whose name
sorts first adds the mask, the other subtracts it, so masks cancel exactly in the sum over all
participants and nowhere else: the coordinator learns only the total.

A round that loses a site is restarted with a new round number, hence fresh masks; masked vectors
of the abandoned round are useless to the coordinator because the masks shared with the lost site
never cancel.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from engine.privacy import ring
from engine.errors import InputError, PrivacyError

PROTOCOL_LABEL = b"fedgwas-secagg-v1"
PUBLIC_KEY_BYTES = 32


@dataclass(frozen=True)
class MaskContext:
    """What a mask stream is bound to: masks never repeat across studies, rounds or blocks."""

    study_id: str
    round: int
    block: int
    participants: tuple[str, ...]  # sorted site names of this round
    purpose: str = ""  # "" for value masks; another label derives an independent stream (e.g. "he-tags")

    def info(self, pair: tuple[str, str]) -> bytes:
        fields = [PROTOCOL_LABEL, self.study_id.encode(), str(self.round).encode(), str(self.block).encode(),
                  b",".join(p.encode() for p in self.participants), pair[0].encode(), pair[1].encode()]
        if self.purpose:
            fields.append(self.purpose.encode())
        return b"\x1f".join(fields)


def generate_private_key() -> X25519PrivateKey:
    """A fresh X25519 private key from the OS CSPRNG."""
    return X25519PrivateKey.generate()


def save_private_key(key: X25519PrivateKey, path: Path) -> None:
    """Write ``key`` as raw 32 bytes with owner-only permissions (0600), refusing to overwrite."""
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                            serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(raw)


def load_private_key(path: Path) -> X25519PrivateKey:
    """Read a raw 32-byte X25519 private key written by :func:`save_private_key`."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read secure-aggregation key {str(path)!r}: {exc.strerror}") from exc
    if len(raw) != 32:
        raise InputError(f"secure-aggregation key {str(path)!r} has {len(raw)} bytes, expected 32 (raw X25519)")
    return X25519PrivateKey.from_private_bytes(raw)


def public_key_bytes(key: X25519PrivateKey) -> bytes:
    """The 32-byte raw public key that a site publishes."""
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(public_key: bytes) -> str:
    """Short hex fingerprint of a public key, for configs, logs and reports."""
    return hashlib.sha256(public_key).hexdigest()[:16]


class PairwiseMasker:
    """Masks one site's ring-encoded statistics for one round.

    Parameters
    ----------
    own_name, private_key
        This site's name (as listed in ``peers``) and X25519 private key.
    peers
        ``{site name: 32-byte public key}`` for every participant of the round, this site included.
        The own entry must equal this site's public key, otherwise the coordinator has mixed up keys.
    """

    def __init__(self, own_name: str, private_key: X25519PrivateKey, peers: dict[str, bytes]) -> None:
        if own_name not in peers:
            raise PrivacyError(f"site {own_name!r} is not among the round's participants {sorted(peers)}")
        if peers[own_name] != public_key_bytes(private_key):
            raise PrivacyError(f"the public key listed for site {own_name!r} is not this site's key")
        if len(peers) < 2:
            raise PrivacyError("secure aggregation needs at least two participants")
        self.own_name = own_name
        self.participants = tuple(sorted(peers))
        self._pair_keys: dict[str, bytes] = {}
        # Plaintext of the keystreams, and their buffer, reused across blocks (no page faults): a masker
        # serves one task's blocks in turn (one per task at the site), not concurrent callers.
        self._zeros = b""
        self._keystream = bytearray()
        for name, public in peers.items():
            if name == own_name:
                continue
            if len(public) != PUBLIC_KEY_BYTES:
                raise PrivacyError(f"public key of site {name!r} has {len(public)} bytes, expected 32")
            shared = private_key.exchange(X25519PublicKey.from_public_bytes(public))
            pair = tuple(sorted((own_name, name)))
            self._pair_keys[name] = HKDF(
                algorithm=hashes.SHA256(), length=32, salt=None, info=PROTOCOL_LABEL + b"|pair|" + "|".join(pair).encode()
            ).derive(shared)

    def _stream(self, pair_key: bytes, info: bytes, n_elements: int) -> np.ndarray:
        """The pair's ChaCha20 keystream as ring elements ``(n_elements, 2)``; a view valid until the next call."""
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(pair_key)
        encryptor = Cipher(algorithms.ChaCha20(key, b"\x00" * 16), mode=None).encryptor()
        size = 16 * n_elements
        if len(self._zeros) < size:
            self._zeros = bytes(size)
            self._keystream = bytearray(size + 64)  # update_into wants room for one more cipher block
        encryptor.update_into(memoryview(self._zeros)[:size], self._keystream)
        return np.frombuffer(self._keystream, dtype=np.uint64, count=2 * n_elements).reshape(-1, 2)

    def mask(self, elements: np.ndarray, study_id: str, round_: int, block: int) -> np.ndarray:
        """Add this site's net mask to ring elements (shape ``(n, 2)``) for (study, round, block)."""
        context = MaskContext(study_id, round_, block, self.participants)
        masked = elements
        for name, pair_key in self._pair_keys.items():
            pair = (min(self.own_name, name), max(self.own_name, name))
            stream = self._stream(pair_key, context.info(pair), len(elements))
            masked = ring.add(masked, stream) if self.own_name < name else ring.subtract(masked, stream)
        return masked


    def zero_sum_tags(self, study_id: str, round_: int, block: int, n: int, bits: int) -> np.ndarray:
        """``n`` integers in ``[0, 2^bits)`` (uint64) whose sum over all participants is a multiple of 2^bits.

        They are the low ``bits`` of this site's net pairwise mask on an independent stream
        (``purpose="he-tags"``): the masks cancel mod 2^128 over every participant, hence mod 2^bits,
        and over any smaller set the sum is uniformly random. Homomorphic-encryption mode puts them in
        each ciphertext so that the key holder can tell a complete aggregate from a partial one.
        """
        if not 1 <= bits <= 64:
            raise ValueError(f"bits must be between 1 and 64, got {bits}")
        context = MaskContext(study_id, round_, block, self.participants, purpose="he-tags")
        net = np.zeros((n, 2), dtype=np.uint64)
        for name, pair_key in self._pair_keys.items():
            pair = (min(self.own_name, name), max(self.own_name, name))
            stream = self._stream(pair_key, context.info(pair), n)
            net = ring.add(net, stream) if self.own_name < name else ring.subtract(net, stream)
        return net[:, 0] & np.uint64((1 << bits) - 1)


def unmask_sum(masked: Sequence[np.ndarray]) -> np.ndarray:
    """Ring sum of all participants' masked vectors: the masks cancel, leaving the encoded total."""
    if not masked:
        raise ValueError("nothing to sum")
    total = masked[0]
    for part in masked[1:]:
        total = ring.add(total, part)
    return total
