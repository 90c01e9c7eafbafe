"""What the coordinator and the key holder agree on about a round of ``--privacy he`` (no TenSEAL here).

The coordinator announces each round (:class:`RoundRegistration`) before asking for any of its
aggregates to be decrypted, once the round's consistency check has fixed its survivors (the
participants it registers); the key holder checks every decryption request against it.
"""

from __future__ import annotations

from dataclasses import dataclass

#: File names of a key holder's CKKS contexts (``fedgwas keys he --out DIR``).
SECRET_FILE = "he_secret.ctx"
PUBLIC_FILE = "he_public.ctx"


@dataclass(frozen=True)
class RoundRegistration:
    """A round announced by the coordinator before any of its aggregates is decrypted."""

    study_id: str
    round: int
    participants: tuple[str, ...]
    block_values: tuple[int, ...]  # statistics per block
    encoding: str
    context_sha256: str
    requester: str = ""
