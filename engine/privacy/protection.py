"""Protecting statistic blocks before they leave a site, and combining them at the coordinator.

Each privacy mode is a pair: a *protector* that turns a site's float64 block into wire bytes, and an
*aggregator* that turns all sites' bytes for a block into the float64 total. Adding a mode means
adding one pair here; handlers and the coordinator only see this small API.

* ``secagg``: fixed-point ring encoding plus self and pairwise masks (:mod:`engine.privacy.secagg`); the
  coordinator holds masked vectors, sums the survivors' and removes the masks only with what the
  survivors reveal after the consistency check (:class:`MaskedRoundSum`).
* ``plaintext``: raw float64, for development only; every result produced this way is labelled.
* ``he``: CKKS homomorphic encryption under a key holder's public context (:mod:`engine.privacy.he`,
  :mod:`engine.privacy.he_encoding`), with tags from the same self and pairwise masks as secagg; the
  coordinator holds ciphertexts it cannot decrypt (:class:`EncryptedRoundSum`), sums the survivors'
  and hands each block's sum, with the tag offsets the survivors' reveals give, to the key holder
  through an :class:`AggregateDecryptor`, which returns the released totals.
  (Differential-privacy noise is added by each site before protection, in every mode, so the
  aggregate is already noisy when it is decrypted: see :mod:`engine.privacy.dp_release`.)
"""

from __future__ import annotations

import os
import tempfile
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from engine.privacy import he_encoding, ring
from engine.errors import PrivacyError, ProtocolError
from engine.privacy.secagg import RoundMasker, Unmasker

if TYPE_CHECKING:  # engine.privacy.he imports tenseal: only the HE code paths load it
    from engine.privacy.he import Ciphertexts, PublicContext

ENCODINGS = {"secagg": "ring128-masked", "plaintext": "float64", "he": he_encoding.ENCODING}


class Protector(Protocol):
    @property
    def encoding(self) -> str:
        """Wire encoding name of the protected bytes (see ``ENCODINGS``)."""

    def protect(self, block: int, values: np.ndarray) -> bytes:
        """Wire bytes for ``values`` (float64, any shape) of result block ``block``."""


@dataclass(frozen=True)
class PlaintextProtector:
    encoding: str = ENCODINGS["plaintext"]

    def protect(self, block: int, values: np.ndarray) -> bytes:
        return np.ascontiguousarray(values, dtype="<f8").tobytes()


@dataclass(frozen=True)
class SecAggProtector:
    """Ring-encodes and masks blocks for one round of double-masked aggregation."""

    masker: RoundMasker
    encoding: str = ENCODINGS["secagg"]

    def protect(self, block: int, values: np.ndarray) -> bytes:
        n_parties = len(self.masker.participants)
        encoded = ring.encode(values, n_parties)
        return ring.to_bytes(self.masker.mask(encoded, block))


@dataclass(frozen=True)
class HeProtector:
    """CKKS-encrypts blocks under the key holder's public context, with masked tags per ciphertext.

    The tags (:meth:`engine.privacy.secagg.RoundMasker.tags`) let the key holder refuse anything but
    the sum over the survivors of the round (see :mod:`engine.privacy.he_encoding`).
    """

    context: PublicContext
    masker: RoundMasker
    encoding: str = ENCODINGS["he"]

    def protect(self, block: int, values: np.ndarray) -> bytes:
        slots = he_encoding.encode(values, len(self.masker.participants))
        tags = self.masker.tags(block, slots.shape[0] * he_encoding.TAGS_PER_CIPHERTEXT, he_encoding.TAG_BITS)
        return self.context.encrypt(he_encoding.attach_tags(slots, tags.reshape(slots.shape[0], -1)))


def make_protector(privacy: str, *, masker: RoundMasker | None = None,
                   he_context: PublicContext | None = None) -> Protector:
    """The protector for a privacy mode; refuses (never downgrades) when its key material is missing."""
    if privacy == "plaintext":
        return PlaintextProtector()
    if privacy == "secagg":
        if masker is None:
            raise PrivacyError("secure aggregation requested but no masker (keys) is available")
        return SecAggProtector(masker=masker)
    if privacy == "he":
        if he_context is None or masker is None:
            missing = "the key holder's public context" if he_context is None else "a masker (keys) for the tags"
            raise PrivacyError(f"homomorphic encryption requested but {missing} is not available")
        he_encoding.max_abs_for(len(masker.participants))  # refuses more sites than the encoding holds
        return HeProtector(context=he_context, masker=masker)
    raise PrivacyError(f"privacy mode {privacy!r} is not implemented; known modes: {sorted(ENCODINGS)}")


class _Contributions:
    """Bookkeeping shared by every aggregator: one block, one contribution per participant.

    Subclasses (dataclasses) provide ``privacy``, ``n_parties`` and ``contributors``.
    """

    privacy: str
    n_parties: int
    contributors: set[str]

    def _admit(self, site: str, encoding: str) -> None:
        """Refuse data in the wrong encoding for this round, or a second copy from one site."""
        expected = ENCODINGS.get(self.privacy)
        if encoding != expected:
            raise ProtocolError(f"site {site!r} sent {encoding!r} data in a {self.privacy!r} round (expected {expected!r})")
        if site in self.contributors:
            raise ProtocolError(f"site {site!r} sent the same block twice")

    @property
    def complete(self) -> bool:
        return len(self.contributors) == self.n_parties

    def _require_complete(self) -> None:
        if not self.complete:
            raise ProtocolError(
                f"block total requested with {len(self.contributors)} of {self.n_parties} contributions"
            )


@dataclass
class BlockAggregator(_Contributions):
    """Sums one block's contributions from every participant of a round.

    ``add`` takes each site's wire bytes for the block; ``total`` returns the float64 aggregate of
    shape ``(n_values,)`` once all ``n_parties`` have contributed (``plaintext`` only: secagg rounds
    use :class:`MaskedRoundSum`).
    """

    privacy: str
    n_parties: int
    n_values: int
    _sum: np.ndarray | None = field(default=None, repr=False)
    contributors: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.privacy != "plaintext":
            raise PrivacyError(f"BlockAggregator does not handle privacy mode {self.privacy!r}; use make_aggregator")

    def add(self, site: str, encoding: str, payload: bytes) -> None:
        self._admit(site, encoding)
        values = np.frombuffer(payload, dtype="<f8")
        if values.size != self.n_values:
            raise ProtocolError(f"site {site!r} sent {values.size} values, expected {self.n_values}")
        self._sum = values.astype(np.float64) if self._sum is None else self._sum + values
        self.contributors.add(site)

    def total(self) -> np.ndarray:
        self._require_complete()
        assert self._sum is not None  # complete implies n_parties >= 1 contributions
        return self._sum


@dataclass
class _RoundParts(ABC):
    """Every site's blocks of one secure round, kept apart until the survivors are known.

    ``sizes`` are the values (ring elements) per block; ``n_parties`` the round's participants (the
    encoding's headroom). A site that does not deliver every block is a dropout: none of its blocks is
    summed. Subclasses parse one site's wire bytes (:meth:`_parse`, outside the lock: the costly part)
    and keep the result (:meth:`_keep`, under it). Thread-safe for one caller per site, so that the
    sites' blocks are taken in parallel.
    """

    n_parties: int
    sizes: tuple[int, ...]
    _parts: dict[str, dict[int, object]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    privacy = ""

    @abstractmethod
    def _parse(self, site: str, block: int, payload: bytes) -> object:
        """One site's block decoded from its wire bytes (validated; may raise ProtocolError)."""

    def _keep(self, site: str, block: int, parsed: object) -> object:
        return parsed

    def add(self, site: str, block: int, encoding: str, payload: bytes) -> None:
        if encoding != ENCODINGS[self.privacy]:
            raise ProtocolError(f"site {site!r} sent {encoding!r} data in a {self.privacy} round")
        with self._lock:
            parts = self._parts.setdefault(site, {})
            if block in parts:
                raise ProtocolError(f"site {site!r} sent block {block} twice")
        parsed = self._parse(site, block, payload)
        with self._lock:
            parts[block] = self._keep(site, block, parsed)

    def delivered(self, site: str) -> bool:
        """True when ``site`` sent every block of the round."""
        with self._lock:
            return len(self._parts.get(site, {})) == len(self.sizes)

    def close(self) -> None:
        """Release what the round holds outside memory (nothing, unless a subclass says otherwise)."""

    def __enter__(self) -> _RoundParts:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


@dataclass
class MaskedRoundSum(_RoundParts):
    """Every site's masked blocks of one secagg round, until the survivors' sum can be unmasked."""

    privacy = "secagg"

    def _parse(self, site: str, block: int, payload: bytes) -> np.ndarray:
        elements = ring.from_bytes(payload)
        if len(elements) != self.sizes[block]:
            raise ProtocolError(f"site {site!r} sent {len(elements)} ring elements for block {block}, "
                                f"expected {self.sizes[block]}")
        return elements

    def totals(self, survivors: tuple[str, ...], unmasker: Unmasker) -> list[np.ndarray]:
        """float64 totals per block over ``survivors``, every remaining mask removed by ``unmasker``."""
        out = []
        for block in range(len(self.sizes)):
            total = self._parts[survivors[0]][block]
            for site in survivors[1:]:
                total = ring.add(total, self._parts[site][block])  # type: ignore[arg-type]
            out.append(ring.decode(unmasker.unmask(total, block), self.n_parties))  # type: ignore[arg-type]
        return out


@dataclass
class EncryptedRoundSum(_RoundParts):
    """Every site's encrypted blocks of one he round (validated ciphertexts it cannot decrypt), until
    the survivors' sum of each block, with its tag offsets, can be sent to the key holder.

    Memory stays at one running sum per block: each ciphertext is added as it arrives, and also
    written, as received, to its site's anonymous temporary file, read back only to take a dropped
    site's blocks out of the sum (CKKS subtraction).
    """

    context: PublicContext | None = None
    _sums: dict[int, Ciphertexts] = field(default_factory=dict, repr=False)
    _spill: dict[str, tuple[Any, list[int]]] = field(default_factory=dict, repr=False)  # site -> (file, [size])
    privacy = "he"

    def _load(self, site: str, block: int, payload: bytes) -> Ciphertexts:
        assert self.context is not None, "an he round needs the key holder's public context"
        try:
            return self.context.load(payload, he_encoding.n_ciphertexts(self.sizes[block]))
        except ProtocolError as error:
            raise ProtocolError(f"site {site!r} sent an invalid encrypted block {block}: {error}") from None

    def _parse(self, site: str, block: int, payload: bytes) -> tuple[Ciphertexts, int, int]:
        part = self._load(site, block, payload)
        with self._lock:
            if site not in self._spill:
                self._spill[site] = (tempfile.TemporaryFile(prefix="fedgwas-he-", buffering=0), [0])
            spill, size = self._spill[site]
        offset = size[0]  # one caller per site: its file is its own
        os.pwrite(spill.fileno(), payload, offset)
        size[0] += len(payload)
        return part, offset, len(payload)

    def _keep(self, site: str, block: int, parsed: object) -> tuple[int, int]:
        kept: tuple[Ciphertexts, int, int] = parsed  # type: ignore[assignment]
        part, offset, length = kept
        if block in self._sums:
            self._sums[block].add(part)
        else:
            self._sums[block] = part
        return offset, length

    def aggregate(self, survivors: tuple[str, ...], block: int) -> bytes:
        """The serialised sum over ``survivors`` of their ciphertexts of ``block`` (once per block):
        the running sum, less the block of every other site that sent one."""
        if any(block not in self._parts.get(site, {}) for site in survivors):
            raise ProtocolError(f"block {block} was not received from every survivor")
        total = self._sums.pop(block, None)
        if total is None:
            raise ProtocolError(f"block {block} was already aggregated")
        for site, parts in self._parts.items():
            if site not in survivors and block in parts:
                where: tuple[int, int] = parts[block]  # type: ignore[assignment]
                offset, length = where
                total.subtract(self._load(site, block, os.pread(self._spill[site][0].fileno(), length, offset)))
        return total.to_bytes()

    def close(self) -> None:
        """Delete the temporary files (also done when the object is collected)."""
        for spill, _ in self._spill.values():
            spill.close()

    def tag_offsets(self, unmasker: Unmasker, block: int) -> np.ndarray:
        """``(n_ciphertexts, TAGS_PER_CIPHERTEXT)`` offsets the survivors' tags of ``block`` sum to."""
        n = he_encoding.n_ciphertexts(self.sizes[block])
        offsets = unmasker.tag_offsets(block, n * he_encoding.TAGS_PER_CIPHERTEXT, he_encoding.TAG_BITS)
        return offsets.reshape(n, he_encoding.TAGS_PER_CIPHERTEXT)


class Aggregator(Protocol):
    """What the coordinator folds each site's wire bytes for one block into (see BlockAggregator)."""

    contributors: set[str]

    def add(self, site: str, encoding: str, payload: bytes) -> None: ...

    @property
    def complete(self) -> bool: ...

    def total(self) -> np.ndarray: ...


class AggregateDecryptor(Protocol):
    """The key holder, as the coordinator sees it (implemented over gRPC by the coordinator)."""

    def decrypt(self, block: int, n_values: int, ciphertext: bytes, tag_offsets: np.ndarray) -> np.ndarray:
        """Released float64 totals ``(n_values,)`` of the aggregate ciphertext of ``block``, whose tags
        must sum to ``tag_offsets`` ``(n_ciphertexts, 2)``."""


def make_aggregator(privacy: str, n_parties: int, n_values: int) -> Aggregator:
    """The aggregator of one block of a plaintext round (secure rounds keep every site's blocks apart
    until the survivors are known: :class:`MaskedRoundSum`, :class:`EncryptedRoundSum`)."""
    if privacy in ("he", "secagg"):
        raise PrivacyError(f"{privacy} rounds are summed over their survivors (MaskedRoundSum, EncryptedRoundSum), "
                           "after the consistency check")
    return BlockAggregator(privacy, n_parties, n_values)
