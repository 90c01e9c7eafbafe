"""Private cross-site overlap: how many participants two sites share, never which.

Diffie-Hellman private set intersection cardinality over X25519, the curve the sites' secure-aggregation
keys already use. For sites A and B of a study:

1. **Keyed IDs.** Each site maps a participant ID ``x`` to ``H(x) = HMAC-SHA256(k_AB, x)``, read as an
   X25519 u-coordinate. ``k_AB`` comes from the pair's X25519 exchange (HKDF, bound to the study):
   only A and B can compute it, so whoever relays the messages (the coordinator) cannot test guessed
   IDs against what it sees.
2. **Blinding.** Each site has a secret scalar per (study, pair), derived from its long-term key
   (nothing to store): ``a`` at A, ``b`` at B. Scalar multiplication commutes:
   ``X25519(a, X25519(b, u)) = X25519(b, X25519(a, u))`` for every u (clamped scalars are multiples of
   8, which also clears the small subgroups of the curve and its twist).
3. **Exchange** (through the coordinator): A sends ``{a H(x)}``; B returns ``{b a H(x)}`` *sorted*
   (sorting pseudorandom values hides which input each came from) and ``{b H(y)}`` for its own IDs;
   A computes ``{a b H(y)}`` and counts the values common to both sets. A learns the count and the
   sizes; B learns A's set size; the coordinator learns the count, which is what the study asks for.
4. **Dropping the shared participants from A** (the study's ``drop_shared_from = "A"``): B returns
   ``{b a H(x)}`` in the order A sent it instead of sorted, so A, which knows which of its IDs each
   value it sent came from, learns *which of its own* participants B also lists
   (:func:`shared_own_ids`) and leaves them out of every cohort of the study. B learns nothing more
   than before; the coordinator still sees pseudorandom values and the count.

Assumptions: honest-but-curious sites; the coordinator relays the peers' public keys (the same trust
as for secure aggregation's pairwise masks, see docs/threat-model.md: a coordinator substituting its
own key for B's could play B and test guessed IDs against A's set). The IDs compared are the
participants' IIDs, so a consortium that wants overlaps detected must give shared participants the
same (pseudonymous) IID at every site.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Iterable, Sequence

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from engine.errors import ProtocolError

#: Phases of the exchange, in order: A blinds, B re-blinds and blinds its own, A counts.
PHASES = ("blind", "reblind", "count")
POINT_BYTES = 32
#: Most IDs one message may carry (32 bytes each: 8 MiB).
MAX_IDS = 250_000


def _hkdf(material: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(material)


def _pair_label(study_id: str, own: str, peer: str) -> bytes:
    first, second = sorted((own, peer))
    return f"{study_id}\x00{first}\x00{second}".encode()


def id_key(own_key: X25519PrivateKey, peer_public: bytes, study_id: str, own: str, peer: str) -> bytes:
    """The pair's ID-hashing key ``k_AB`` (the same at both sites, unknown to anyone else)."""
    shared = own_key.exchange(X25519PublicKey.from_public_bytes(peer_public))
    return _hkdf(shared, b"fedgwas-overlap-ids\x00" + _pair_label(study_id, own, peer))


def blinding_scalar(own_key: X25519PrivateKey, study_id: str, own: str, peer: str) -> X25519PrivateKey:
    """This site's secret scalar for (study, pair), derived from its long-term key."""
    raw = own_key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                serialization.NoEncryption())
    return X25519PrivateKey.from_private_bytes(_hkdf(raw, b"fedgwas-overlap-scalar\x00" + _pair_label(study_id, own, peer)))


def hash_ids(ids: Iterable[str], key: bytes) -> list[bytes]:
    """``H(x)``: HMAC-SHA256 of each ID under the pair key, as 32-byte u-coordinates."""
    return [hmac.new(key, str(x).encode("utf-8"), hashlib.sha256).digest() for x in ids]


def blind(points: Sequence[bytes], scalar: X25519PrivateKey, keep_order: bool = False) -> list[bytes]:
    """``X25519(scalar, u)`` for each u, sorted (the order reveals nothing about the inputs); with
    ``keep_order``, in the order given (the one-sided exchange of :func:`shared_own_ids`).

    Raises
    ------
    ProtocolError
        A value is not 32 bytes or is a small-order point (whose product is all zeros).
    """
    if len(points) > MAX_IDS:
        raise ProtocolError(f"overlap: {len(points)} IDs in one message, at most {MAX_IDS}")
    out = []
    for point in points:
        if len(point) != POINT_BYTES:
            raise ProtocolError(f"overlap: a blinded ID has {len(point)} bytes, expected {POINT_BYTES}")
        try:
            out.append(scalar.exchange(X25519PublicKey.from_public_bytes(bytes(point))))
        except ValueError:
            raise ProtocolError("overlap: a blinded ID is a small-order point") from None
    return out if keep_order else sorted(out)


def count_shared(own_double: Sequence[bytes], peer_single: Sequence[bytes], scalar: X25519PrivateKey) -> int:
    """Participants shared: own IDs blinded by both sites, against the peer's IDs blinded by the peer
    and now by this site (``scalar``)."""
    return len(set(own_double) & set(blind(peer_single, scalar)))


def shared_own_ids(ids: Sequence[str], key: bytes, scalar: X25519PrivateKey, own_double: Sequence[bytes],
                   peer_single: Sequence[bytes]) -> list[str]:
    """This site's IDs that the peer also lists: the one-sided exchange, in which only this site learns
    which of its own participants are shared (it then leaves them out of the study).

    ``ids`` are the site's distinct IDs (:func:`unique_ids`), ``key`` the pair key; this site sent
    :func:`blind` of their hashes (sorted); the peer re-blinded that list *keeping its order*
    (``own_double``) and blinded its own IDs (``peer_single``, sorted). Position ``i`` of
    ``own_double`` is then the ``i``-th value this site sent, whose ID this site can recompute; the
    peer's IDs stay hidden (this site sees only their doubly blinded values). Returns sorted IDs.
    """
    blinded = blind(hash_ids(ids, key), scalar, keep_order=True)
    order = sorted(range(len(ids)), key=blinded.__getitem__)  # the order of what this site sent
    peer = set(blind(peer_single, scalar))
    return sorted(ids[order[i]] for i, value in enumerate(own_double) if value in peer)


def unique_ids(iids: Sequence[str]) -> list[str]:
    """Distinct IDs (a site lists each participant once; PLINK refuses duplicates within a .fam)."""
    return sorted(set(map(str, iids)))


def overlap_key(identity_seed: bytes) -> X25519PrivateKey:
    """The site's X25519 key for overlap checks, derived from its identity key's private bytes ``(32,)``.

    Deterministic, so a site needs no extra key file; its public half is signed with the identity key
    (:func:`key_statement`) and a peer checks that signature against its pinned roster, so the
    coordinator that relays the key cannot substitute its own.
    """
    return X25519PrivateKey.from_private_bytes(_hkdf(identity_seed, b"fedgwas-overlap-x25519-v1"))


def public_bytes(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_statement(site: str, public_key: bytes) -> bytes:
    """What a site signs with its identity key to vouch for its overlap key: domain, name, key."""
    name = site.encode()
    return b"fedgwas-overlap-key-v1\0" + len(name).to_bytes(4, "big") + name + public_key
