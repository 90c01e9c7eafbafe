"""Protecting statistic blocks before they leave a site, and combining them at the coordinator.

Each privacy mode is a pair: a *protector* that turns a site's float64 block into wire bytes, and an
*aggregator* that turns all sites' bytes for a block into the float64 total. Adding a mode means
adding one pair here; handlers and the coordinator only see this small API.

* ``secagg``: fixed-point ring encoding plus pairwise masks (:mod:`engine.secagg`); the aggregator
  only ever holds masked vectors and their sum.
* ``plaintext``: raw float64, for development only; every result produced this way is labelled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from engine import ring
from engine.errors import PrivacyError, ProtocolError
from engine.secagg import PairwiseMasker

ENCODINGS = {"secagg": "ring128-masked", "plaintext": "float64"}


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


def make_protector(privacy: str, *, masker: PairwiseMasker | None = None, study_id: str = "",
                   round_: int = 0) -> Protector:
    """The protector for a privacy mode; refuses (never downgrades) when its key material is missing."""
    if privacy == "plaintext":
        return PlaintextProtector()
    if privacy == "secagg":
        if masker is None:
            raise PrivacyError("secure aggregation requested but no masker (keys) is available")
        return SecAggProtector(masker=masker, study_id=study_id, round=round_)
    raise PrivacyError(f"privacy mode {privacy!r} is not implemented; known modes: {sorted(ENCODINGS)}")


@dataclass
class BlockAggregator:
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

    def add(self, site: str, encoding: str, payload: bytes) -> None:
        expected = ENCODINGS.get(self.privacy)
        if encoding != expected:
            raise ProtocolError(f"site {site!r} sent {encoding!r} data in a {self.privacy!r} round (expected {expected!r})")
        if site in self.contributors:
            raise ProtocolError(f"site {site!r} sent the same block twice")
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

    @property
    def complete(self) -> bool:
        return len(self.contributors) == self.n_parties

    def total(self) -> np.ndarray:
        if not self.complete or self._sum is None:
            raise ProtocolError(
                f"block total requested with {len(self.contributors)} of {self.n_parties} contributions"
            )
        if self.privacy == "plaintext":
            return self._sum
        return ring.decode(self._sum, self.n_parties)
