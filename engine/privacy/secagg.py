"""Double-masked secure aggregation (Bonawitz et al. CCS 2017): the masks of one round.

Each site masks its ring-encoded statistics of a round with

* a **self mask**: a keyed ChaCha20 stream from a fresh 32-byte seed of its own, and
* **pairwise masks**: one ChaCha20 stream per peer, keyed by HKDF of the X25519 agreement of the two
  sites' *ephemeral* mask keys; the site whose name sorts first adds it, the other subtracts it.

Every key derivation is bound to the round context (a hash of the whole task, every participant's
signed ephemeral keys and nonces: :mod:`engine.privacy.secure_round`) and to the block number, so no
mask ever serves two blocks, rounds or tasks. Summed over the survivors of a round, the pairwise
masks between survivors cancel; the coordinator removes the rest only with what the survivors reveal
after the consistency check: the survivors' self-mask seeds and the dropped sites' mask keys (never
both for one site), reconstructed from Shamir shares. Under homomorphic encryption the same masks, on
streams of their own, make the tags of each ciphertext (:meth:`RoundMasker.tags`), and what the
reveals give is the offset the survivors' tags sum to (:meth:`Unmasker.tag_offsets`).
"""

from __future__ import annotations

import hashlib
from typing import Mapping, Sequence

import numpy as np
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from engine.privacy import ring
from engine.errors import PrivacyError

PROTOCOL_LABEL = b"fedgwas-secagg-v2"
PUBLIC_KEY_BYTES = 32
SEED_BYTES = 32
#: Stream purposes: the masks of secagg blocks and the tags of HE ciphertexts (independent streams).
VALUE_PURPOSE, TAG_PURPOSE = "values", "he-tags"


def generate_private_key() -> X25519PrivateKey:
    """A fresh X25519 private key from the OS CSPRNG."""
    return X25519PrivateKey.generate()


def public_key_bytes(key: X25519PrivateKey) -> bytes:
    """The 32-byte raw public key of an X25519 private key."""
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def private_key_bytes(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())


def fingerprint(public_key: bytes) -> str:
    """Short hex fingerprint of a public key, for logs and reports."""
    return hashlib.sha256(public_key).hexdigest()[:16]


def _hkdf(key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(key)


def pair_key(own: X25519PrivateKey, own_name: str, peer_name: str, peer_public: bytes, context: bytes) -> bytes:
    """The 32-byte key both sites of a pair derive from their ephemeral mask keys for one round."""
    if len(peer_public) != PUBLIC_KEY_BYTES:
        raise PrivacyError(f"mask key of site {peer_name!r} has {len(peer_public)} bytes, expected 32")
    shared = own.exchange(X25519PublicKey.from_public_bytes(peer_public))
    low, high = sorted((own_name, peer_name))
    return _hkdf(shared, PROTOCOL_LABEL + b"|pair|" + context + b"|" + low.encode() + b"\x1f" + high.encode())


def self_key(seed: bytes, site: str, context: bytes) -> bytes:
    """The key of a site's self-mask stream for one round, from its seed."""
    return _hkdf(seed, PROTOCOL_LABEL + b"|self|" + context + b"|" + site.encode())


class Keystreams:
    """Keyed ChaCha20 streams as ring elements, with buffers reused across blocks (one caller at a time)."""

    def __init__(self) -> None:
        self._zeros = b""
        self._buffer = bytearray()

    def stream(self, key: bytes, purpose: str, block: int, n_elements: int) -> np.ndarray:
        """``(n_elements, 2)`` uint64 ring elements of ``key``'s stream for ``(purpose, block)``;
        a view valid until the next call."""
        block_key = _hkdf(key, PROTOCOL_LABEL + b"|block|" + purpose.encode() + b"|" + str(block).encode())
        encryptor = Cipher(algorithms.ChaCha20(block_key, b"\x00" * 16), mode=None).encryptor()
        size = 16 * n_elements
        if len(self._zeros) < size:
            self._zeros = bytes(size)
            self._buffer = bytearray(size + 64)  # update_into wants room for one more cipher block
        encryptor.update_into(memoryview(self._zeros)[:size], self._buffer)
        return np.frombuffer(self._buffer, dtype=np.uint64, count=2 * n_elements).reshape(-1, 2)


class RoundMasker:
    """Masks one site's ring-encoded blocks for one round.

    Parameters
    ----------
    own_name
        This site's name.
    self_seed
        Its self-mask seed (``None``: pairwise masks only, as for the HE tags).
    pair_keys
        ``{peer name: pair key}`` (:func:`pair_key`) for every other participant of the round.
    context
        The round context (:func:`engine.privacy.secure_round.round_context`).
    """

    def __init__(self, own_name: str, self_seed: bytes | None, pair_keys: Mapping[str, bytes], context: bytes) -> None:
        if not pair_keys:
            raise PrivacyError("secure aggregation needs at least two participants")
        self.own_name = own_name
        self.participants = tuple(sorted([own_name, *pair_keys]))
        self._self_key = None if self_seed is None else self_key(self_seed, own_name, context)
        self._pair_keys = dict(pair_keys)
        self._streams = Keystreams()

    def _net(self, elements: np.ndarray, purpose: str, block: int) -> np.ndarray:
        masked = elements
        for name, key in self._pair_keys.items():
            stream = self._streams.stream(key, purpose, block, len(elements))
            masked = ring.add(masked, stream) if self.own_name < name else ring.subtract(masked, stream)
        return masked

    def mask(self, elements: np.ndarray, block: int) -> np.ndarray:
        """Ring elements ``(n, 2)`` of ``block`` plus this site's self mask and net pairwise mask."""
        masked = elements
        if self._self_key is not None:
            masked = ring.add(masked, self._streams.stream(self._self_key, VALUE_PURPOSE, block, len(elements)))
        return self._net(masked, VALUE_PURPOSE, block)

    def tags(self, block: int, n: int, bits: int) -> np.ndarray:
        """``n`` integers in ``[0, 2^bits)`` (uint64): this site's HE tags for ``block``.

        The low ``bits`` of this site's self mask plus its net pairwise mask on independent streams
        (purpose ``he-tags``). Over the survivors of a round the pairwise parts between survivors
        cancel; what is left (the survivors' self masks, their pairwise masks with dropped sites) is
        known only to whoever reconstructed the survivors' seeds and the dropped sites' mask keys
        (:meth:`Unmasker.tag_offsets`). Over any other set of sites the sum is uniformly random.
        Homomorphic-encryption mode puts them in each ciphertext so that the key holder can tell the
        survivors' complete aggregate from one site's block or a partial sum.
        """
        if not 1 <= bits <= 64:
            raise ValueError(f"bits must be between 1 and 64, got {bits}")
        zeros = np.zeros((n, 2), dtype=np.uint64)
        own = zeros if self._self_key is None else self._streams.stream(self._self_key, TAG_PURPOSE, block, n).copy()
        net = self._net(own, TAG_PURPOSE, block)
        return net[:, 0] & np.uint64((1 << bits) - 1)


class Unmasker:
    """What the coordinator removes from a round's sum over the survivors, once secrets are revealed.

    ``self_keys`` are the survivors' self-mask keys (:func:`self_key` of their reconstructed seeds);
    ``dropped_pairs`` maps ``(survivor, dropped site)`` to their pair key (derived from the dropped
    site's reconstructed mask key): the survivor's mask with a dropped site has no partner in the sum.
    """

    def __init__(self, self_keys: Mapping[str, bytes], dropped_pairs: Mapping[tuple[str, str], bytes]) -> None:
        self._self_keys = dict(self_keys)
        self._dropped_pairs = dict(dropped_pairs)
        self._streams = Keystreams()

    def _remove(self, total: np.ndarray, purpose: str, block: int) -> np.ndarray:
        out = total
        for key in self._self_keys.values():
            out = ring.subtract(out, self._streams.stream(key, purpose, block, len(total)))
        for (survivor, dropped), key in self._dropped_pairs.items():
            stream = self._streams.stream(key, purpose, block, len(total))
            # the survivor added the mask if it sorts first, subtracted it otherwise: undo that
            out = ring.subtract(out, stream) if survivor < dropped else ring.add(out, stream)
        return out

    def unmask(self, total: np.ndarray, block: int) -> np.ndarray:
        """``total`` (ring sum of the survivors' masked block) with every remaining mask removed."""
        return self._remove(total, VALUE_PURPOSE, block)

    def tag_offsets(self, block: int, n: int, bits: int) -> np.ndarray:
        """``n`` integers in ``[0, 2^bits)``: what the survivors' HE tags of ``block`` sum to, modulo 2^bits.

        The sum of the survivors' self tags and of their pairwise tags with the dropped sites (those
        between survivors cancel): the key holder releases a block only if its decrypted tag sums
        equal these modulo 2^bits (:func:`engine.privacy.he_encoding.decode`).
        """
        left = ring.subtract(np.zeros((n, 2), dtype=np.uint64),
                             self._remove(np.zeros((n, 2), dtype=np.uint64), TAG_PURPOSE, block))
        return left[:, 0] & np.uint64((1 << bits) - 1)


def unmask_sum(masked: Sequence[np.ndarray]) -> np.ndarray:
    """Ring sum of masked vectors (the pairwise masks between the summed sites cancel)."""
    if not masked:
        raise ValueError("nothing to sum")
    total = masked[0]
    for part in masked[1:]:
        total = ring.add(total, part)
    return total
