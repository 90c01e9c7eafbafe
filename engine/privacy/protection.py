"""Protecting statistic blocks before they leave a site, and combining them at the coordinator.

Each privacy mode is a pair: a *protector* that turns a site's float64 block into wire bytes, and an
*aggregator* that turns all sites' bytes for a block into the float64 total. Adding a mode means
adding one pair here; handlers and the coordinator only see this small API.

* ``secagg``: fixed-point ring encoding plus pairwise masks (:mod:`engine.privacy.secagg`); the aggregator
  only ever holds masked vectors and their sum.
* ``plaintext``: raw float64, for development only; every result produced this way is labelled.
* ``he``: CKKS homomorphic encryption under a key holder's public context (:mod:`engine.privacy.he`,
  :mod:`engine.privacy.he_encoding`); the aggregator sums ciphertexts it cannot decrypt and hands the sum
  to the key holder through an :class:`AggregateDecryptor`, which returns the released totals.
  (Differential-privacy noise is added by each site before protection, in every mode, so the
  aggregate is already noisy when it is decrypted: see :mod:`engine.privacy.dp_release`.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from engine.privacy import he_encoding, ring
from engine.errors import PrivacyError, ProtocolError
from engine.privacy.secagg import PairwiseMasker

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
    """Ring-encodes and masks blocks for one (study, round) of pairwise-masked aggregation."""

    masker: PairwiseMasker
    study_id: str
    round: int
    encoding: str = ENCODINGS["secagg"]

    def protect(self, block: int, values: np.ndarray) -> bytes:
        n_parties = len(self.masker.participants)
        encoded = ring.encode(values, n_parties)
        return ring.to_bytes(self.masker.mask(encoded, self.study_id, self.round, block))


@dataclass(frozen=True)
class HeProtector:
    """CKKS-encrypts blocks under the key holder's public context, with zero-sum tags per ciphertext.

    The tags (:meth:`PairwiseMasker.zero_sum_tags`) let the key holder refuse anything but the sum
    over every participant of the round (see :mod:`engine.privacy.he_encoding`).
    """

    context: PublicContext
    masker: PairwiseMasker
    study_id: str
    round: int
    encoding: str = ENCODINGS["he"]

    def protect(self, block: int, values: np.ndarray) -> bytes:
        slots = he_encoding.encode(values, len(self.masker.participants))
        tags = self.masker.zero_sum_tags(self.study_id, self.round, block,
                                         slots.shape[0] * he_encoding.TAGS_PER_CIPHERTEXT, he_encoding.TAG_BITS)
        return self.context.encrypt(he_encoding.attach_tags(slots, tags.reshape(slots.shape[0], -1)))


def make_protector(privacy: str, *, masker: PairwiseMasker | None = None, study_id: str = "",
                   round_: int = 0, he_context: PublicContext | None = None) -> Protector:
    """The protector for a privacy mode; refuses (never downgrades) when its key material is missing."""
    if privacy == "plaintext":
        return PlaintextProtector()
    if privacy == "secagg":
        if masker is None:
            raise PrivacyError("secure aggregation requested but no masker (keys) is available")
        return SecAggProtector(masker=masker, study_id=study_id, round=round_)
    if privacy == "he":
        if he_context is None or masker is None:
            missing = "the key holder's public context" if he_context is None else "a masker (keys) for the tags"
            raise PrivacyError(f"homomorphic encryption requested but {missing} is not available")
        he_encoding.max_abs_for(len(masker.participants))  # refuses more sites than the encoding holds
        return HeProtector(context=he_context, masker=masker, study_id=study_id, round=round_)
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
    shape ``(n_values,)`` once all ``n_parties`` have contributed. For ``secagg`` the per-site
    inputs are masked ring elements and only the unmasked *sum* is ever decoded.
    """

    privacy: str
    n_parties: int
    n_values: int
    _sum: np.ndarray | None = field(default=None, repr=False)
    contributors: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.privacy not in ("secagg", "plaintext"):
            raise PrivacyError(f"BlockAggregator does not handle privacy mode {self.privacy!r}; use make_aggregator")

    def add(self, site: str, encoding: str, payload: bytes) -> None:
        self._admit(site, encoding)
        if self.privacy == "plaintext":
            values = np.frombuffer(payload, dtype="<f8")
            if values.size != self.n_values:
                raise ProtocolError(f"site {site!r} sent {values.size} values, expected {self.n_values}")
            self._sum = values.astype(np.float64) if self._sum is None else self._sum + values
        else:
            elements = ring.from_bytes(payload)
            if len(elements) != self.n_values:
                raise ProtocolError(f"site {site!r} sent {len(elements)} ring elements, expected {self.n_values}")
            self._sum = elements if self._sum is None else ring.add(self._sum, elements)
        self.contributors.add(site)

    def total(self) -> np.ndarray:
        self._require_complete()
        assert self._sum is not None  # complete implies n_parties >= 1 contributions
        if self.privacy == "plaintext":
            return self._sum
        return ring.decode(self._sum, self.n_parties)


class Aggregator(Protocol):
    """What the coordinator folds each site's wire bytes for one block into (see BlockAggregator)."""

    contributors: set[str]

    def add(self, site: str, encoding: str, payload: bytes) -> None: ...

    @property
    def complete(self) -> bool: ...

    def total(self) -> np.ndarray: ...


class AggregateDecryptor(Protocol):
    """The key holder, as the aggregator sees it (implemented over gRPC by the coordinator)."""

    def decrypt(self, block: int, n_values: int, ciphertext: bytes) -> np.ndarray:
        """Released float64 totals ``(n_values,)`` of the aggregate ciphertext of ``block``."""


@dataclass
class HeBlockAggregator(_Contributions):
    """Sums one block's ciphertexts from every participant; only the key holder can open the sum.

    Holds a public context only (:class:`engine.privacy.he.PublicContext` refuses a secret key), so this side
    can add ciphertexts but never decrypt one; ``total`` sends the complete sum to ``decryptor``.
    """

    n_parties: int
    n_values: int
    block: int
    context: PublicContext
    decryptor: AggregateDecryptor
    _sum: Ciphertexts | None = field(default=None, repr=False)
    contributors: set[str] = field(default_factory=set)
    privacy: str = "he"

    def add(self, site: str, encoding: str, payload: bytes) -> None:
        self._admit(site, encoding)
        try:
            part = self.context.load(payload, he_encoding.n_ciphertexts(self.n_values))
        except ProtocolError as error:
            raise ProtocolError(f"site {site!r} sent an invalid encrypted block {self.block}: {error}") from None
        if self._sum is None:
            self._sum = part
        else:
            self._sum.add(part)
        self.contributors.add(site)

    def total(self) -> np.ndarray:
        self._require_complete()
        assert self._sum is not None  # complete implies n_parties >= 1 contributions
        values = np.asarray(self.decryptor.decrypt(self.block, self.n_values, self._sum.to_bytes()), dtype=np.float64)
        if values.shape != (self.n_values,):
            raise ProtocolError(f"the key holder returned {values.shape} values for block {self.block}, "
                                f"expected {self.n_values}")
        return values


def make_aggregator(privacy: str, n_parties: int, n_values: int, *, block: int = 0,
                    he_context: PublicContext | None = None, decryptor: AggregateDecryptor | None = None) -> Aggregator:
    """The aggregator of one block for a privacy mode; HE needs the public context and the key holder."""
    if privacy == "he":
        if he_context is None or decryptor is None:
            raise PrivacyError("homomorphic-encryption aggregation needs the key holder's public context and a "
                               "connection to the key holder")
        return HeBlockAggregator(n_parties, n_values, block, he_context, decryptor)
    return BlockAggregator(privacy, n_parties, n_values)
