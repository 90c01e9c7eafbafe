"""One secure-aggregation round, SecAgg+-style, as a site and as the coordinator see it (no transport).

Phases (Bonawitz et al. CCS 2017, active variant; Flower's ``secaggplus``), with ``n`` participants
named in the task and a threshold ``t`` (default a majority):

1. **Advertise keys.** Each site draws two ephemeral X25519 key pairs (one encrypts shares, one agrees
   masks), a nonce and a self-mask seed, and signs ``(task digest, name, keys, nonce, seed
   commitment)`` with its Ed25519 identity key (:mod:`engine.privacy.roster`).
2. **Verify and share.** A site checks every advertisement: one per named participant, each a roster
   member whose signature verifies over the *same* task digest. The round context is the hash of the
   digest and every advertisement. It then splits its seed and its mask private key into ``n``
   Shamir shares (:mod:`engine.privacy.shamir`) and encrypts one of each to every peer (AES-GCM under
   their X25519 agreement, bound to the context, sender and recipient).
3. **Masked input.** Blocks leave the site with its self mask and pairwise masks
   (:class:`engine.privacy.secagg.RoundMasker`); under ``he`` the blocks are CKKS ciphertexts and
   the same masks make the tags of each ciphertext (:meth:`~engine.privacy.secagg.RoundMasker.tags`).
4. **Consistency check.** The coordinator names the survivors (sites that sent every block); each
   survivor signs ``(context, survivors)``.
5. **Unmasking.** Given at least ``t`` valid signatures over the same survivor set, a site reveals its
   shares of each survivor's seed and of each dropped site's mask key: never both for one site, and
   only once. With ``t`` reveals the coordinator rebuilds them (:func:`recover`) and removes every
   mask left in the survivors' sum (under ``he``: computes the offsets the survivors' tags sum to,
   which the key holder checks before it decrypts the survivors' aggregate).

The task digest covers the whole task (:func:`task_digest`), so sites that were shown different tasks
never agree on a context, and every mask key is derived from fresh ephemeral keys and nonces: masks
never repeat across tasks, whatever the coordinator sends.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from engine.privacy import secagg
from engine.errors import PrivacyError, ProtocolError
from engine.privacy import roster as roster_module
from engine.privacy import shamir
from engine.privacy.roster import Roster
from engine.tasks import TaskSpec

LABEL = b"fedgwas-secure-round-v1"
SELF_MASK, MASK_KEY = "self_mask", "mask_key"


# ---- canonical encoding ----------------------------------------------------------------------

def encode(value: Any) -> bytes:
    """Canonical, type-tagged, length-prefixed encoding of nested values (no two values share one)."""
    if isinstance(value, bytes):
        return b"b" + struct.pack("<Q", len(value)) + value
    if isinstance(value, str):
        raw = value.encode("utf-8")
        return b"s" + struct.pack("<Q", len(raw)) + raw
    if isinstance(value, bool):
        return b"t" if value else b"F"
    if isinstance(value, int):
        return b"i" + struct.pack("<q", value)
    if isinstance(value, float):
        return b"f" + struct.pack("<d", value)
    if value is None:
        return b"n"
    if isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value)
        array = array.astype(array.dtype.newbyteorder("<"), copy=False)
        raw = array.tobytes()
        return b"a" + encode(array.dtype.str) + encode(tuple(int(d) for d in array.shape)) + \
            struct.pack("<Q", len(raw)) + raw
    if isinstance(value, (tuple, list)):
        return b"l" + struct.pack("<Q", len(value)) + b"".join(encode(v) for v in value)
    if isinstance(value, Mapping):
        items = sorted(value.items())
        return b"m" + struct.pack("<Q", len(items)) + b"".join(encode(k) + encode(v) for k, v in items)
    raise TypeError(f"cannot encode {type(value).__name__}")


def task_digest(task: TaskSpec) -> bytes:
    """SHA-256 of every field of ``task`` that all its participants receive alike.

    That is everything but the site's own variant rows and flips (:func:`site_arrays_digest`): study,
    round, analysis, cohort and data use, privacy mode, participants, threshold, block size, requester,
    every parameter (request id and DP request included), every input array and the privacy material.
    """
    cohort = task.cohort
    data_use = None if cohort.data_use is None else (cohort.data_use.purpose, cohort.data_use.commercial)
    fields = (LABEL, "task", task.study_id, task.round, task.analysis, cohort.phenotype, tuple(cohort.covariates),
              cohort.phenotype_coding, data_use, task.privacy, tuple(task.participants), task.threshold,
              task.block_size, task.n_variants, task.requester, dict(task.parameters),
              {name: np.asarray(values) for name, values in task.inputs.items()}, dict(task.privacy_material))
    return hashlib.sha256(encode(fields)).digest()


def site_arrays_digest(task: TaskSpec) -> bytes:
    """SHA-256 of the site's own part of a task: its variant rows and allele flips."""
    return hashlib.sha256(encode((LABEL, "site-arrays", task.variant_index.astype(np.int64),
                                  task.flip.astype(np.uint8)))).digest()


# ---- messages ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class KeyAdvertisement:
    site: str
    encryption_key: bytes
    mask_key: bytes
    nonce: bytes
    seed_commitment: bytes
    task_digest: bytes
    signature: bytes = b""

    def signed_bytes(self) -> bytes:
        return encode((LABEL, "keys", self.task_digest, self.site, self.encryption_key, self.mask_key, self.nonce,
                       self.seed_commitment))


@dataclass(frozen=True)
class EncryptedShare:
    sender: str
    recipient: str
    ciphertext: bytes


@dataclass(frozen=True)
class OutgoingShares:
    """A site's encrypted shares, one per peer, as one event (the coordinator relays them)."""

    shares: tuple[EncryptedShare, ...]


@dataclass(frozen=True)
class SurvivorSignature:
    site: str
    survivors: tuple[str, ...]
    signature: bytes


@dataclass(frozen=True)
class RevealedShare:
    owner: str
    secret: str  # SELF_MASK or MASK_KEY
    x: int
    y: bytes


@dataclass(frozen=True)
class ShareReveal:
    site: str
    shares: tuple[RevealedShare, ...]


def round_context(digest: bytes, advertisements: Sequence[KeyAdvertisement]) -> bytes:
    """The round context: the task digest and every participant's signed keys, sorted by name."""
    ads = sorted(advertisements, key=lambda a: a.site)
    return hashlib.sha256(encode((LABEL, "context", digest, [(a.site, a.encryption_key, a.mask_key, a.nonce,
                                                               a.seed_commitment) for a in ads]))).digest()


def survivors_message(context: bytes, survivors: Sequence[str]) -> bytes:
    return encode((LABEL, "survivors", context, tuple(sorted(survivors))))


def majority(n: int) -> int:
    return n // 2 + 1


def safe_threshold(n: int, colluders: int) -> int:
    """The smallest Shamir threshold of a round of ``n`` sites that ``colluders`` colluding sites cannot
    defeat: ``t`` with ``2t > n + colluders``.

    The consistency check asks every site for ``t`` signatures over the survivor set it was shown. A
    coordinator that shows set S1 (without an honest site X) to ``h1`` honest sites and S2 (with X) to
    the other ``h2`` gets the colluders' signatures on both; it collects X's pairwise secret from the
    first group and X's self-mask seed from the second, hence X's input alone, when ``h1 + c >= t``
    and ``h2 + c >= t``. With ``h1 + h2 = n - c`` that needs ``n + c >= 2t``. With no colluder this is a
    majority (Bonawitz et al. take ``t > 2n/3`` against ``n/3`` colluders).
    """
    return (n + colluders) // 2 + 1


def _aead_key(own: X25519PrivateKey, peer_public: bytes, context: bytes) -> bytes:
    shared = own.exchange(X25519PublicKey.from_public_bytes(peer_public))
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=LABEL + b"|shares|" + context).derive(shared)


# ---- the site's side -------------------------------------------------------------------------------

class SiteRound:
    """One site's state in one round (see the module docstring); every check raises PrivacyError.

    Parameters
    ----------
    site, identity_key, roster
        This site's name, its Ed25519 identity key and its pinned consortium roster.
    participants, threshold
        As named by the task (``threshold`` 0: a majority).
    digest
        :func:`task_digest` of the task this site received.
    min_participants
        The site's own minimum ([policy] min_participants): of verified roster members, and of survivors.
    max_colluders
        How many participating sites this site assumes may collude with the coordinator ([policy]
        max_colluding_sites): the round's threshold must be at least :func:`safe_threshold`.

    The same round serves both secure modes: under secagg the masks cover the values, under he the
    tags of each ciphertext (:meth:`engine.privacy.secagg.RoundMasker.tags`); a dropped site is
    recovered the same way in both.
    """

    def __init__(self, site: str, identity_key: Ed25519PrivateKey, roster: Roster, participants: Sequence[str],
                 threshold: int, digest: bytes, min_participants: int, max_colluders: int = 0) -> None:
        self.site = site
        self.roster = roster
        self.participants = tuple(sorted(participants))
        if len(set(self.participants)) != len(self.participants):
            raise ProtocolError(f"task.participants repeats a site: {list(participants)}")
        if site not in self.participants:
            raise ProtocolError(f"site {site!r} is not among the task's participants {list(participants)}")
        own = roster.require(site, site)
        if own.identity_key != roster_module.public_bytes(identity_key):
            raise PrivacyError(f"site {site!r}: its identity key is not the one its roster lists for it")
        for name in self.participants:
            roster.require(site, name)
        n = len(self.participants)
        self.min_survivors = max(min_participants, 2)
        if n < self.min_survivors:
            raise PrivacyError(f"site {site!r} requires at least {self.min_survivors} verified participating sites, "
                               f"the task names {n}")
        self.threshold = threshold or majority(n)
        floor = safe_threshold(n, max_colluders)
        if not floor <= self.threshold <= n:
            assumed = f"; this site assumes up to {max_colluders} colluding site(s)" if max_colluders else ""
            raise PrivacyError(f"site {site!r} refuses threshold {self.threshold} for {n} participants: it must be "
                               f"between {floor} (more than half of the participants plus the colluders{assumed}) "
                               f"and {n}")
        self.digest = digest
        self._identity = identity_key
        self._encryption = secagg.generate_private_key()
        self._mask = secagg.generate_private_key()
        self._seed = os.urandom(secagg.SEED_BYTES)
        self.advertisement = self._advertise()
        self.context = b""
        self._peers: dict[str, KeyAdvertisement] = {}
        self._held: dict[str, tuple[int, int, int]] = {}  # owner -> (x, seed share, mask-key share)
        self._signed: tuple[str, ...] | None = None
        self._revealed = False

    @property
    def index(self) -> int:
        """This site's Shamir evaluation point (1-based position among the sorted participants)."""
        return self.participants.index(self.site) + 1

    def _advertise(self) -> KeyAdvertisement:
        unsigned = KeyAdvertisement(self.site, secagg.public_key_bytes(self._encryption),
                                    secagg.public_key_bytes(self._mask), os.urandom(32),
                                    hashlib.sha256(self._seed).digest(), self.digest)
        return KeyAdvertisement(**{**unsigned.__dict__,
                                   "signature": roster_module.sign(self._identity, unsigned.signed_bytes())})

    def receive_keys(self, advertisements: Sequence[KeyAdvertisement]) -> None:
        """Verify every participant's signed keys; fixes the round context."""
        names = sorted(a.site for a in advertisements)
        if names != list(self.participants):
            raise PrivacyError(f"site {self.site!r} received keys for {names}, but the task names "
                               f"{list(self.participants)}")
        mine = next(a for a in advertisements if a.site == self.site)
        if mine != self.advertisement:
            raise PrivacyError(f"site {self.site!r}: the keys relayed for it are not the ones it advertised")
        seen: set[bytes] = set()
        for ad in advertisements:
            entry = self.roster.require(self.site, ad.site)
            if ad.task_digest != self.digest:
                raise PrivacyError(f"site {self.site!r}: site {ad.site!r} signed another task (the coordinator "
                                   f"sent the participants different tasks)")
            if not roster_module.verify(entry.identity_key, ad.signed_bytes(), ad.signature):
                raise PrivacyError(f"site {self.site!r}: the keys of {ad.site!r} are not signed by its roster "
                                   f"identity key {entry.fingerprint[:16]}")
            for key in (ad.encryption_key, ad.mask_key):
                if len(key) != secagg.PUBLIC_KEY_BYTES or key in seen:
                    raise PrivacyError(f"site {self.site!r}: site {ad.site!r} advertised a malformed or reused key")
                seen.add(key)
        self._peers = {a.site: a for a in advertisements}
        self.context = round_context(self.digest, advertisements)

    def _require_keys(self) -> None:
        if not self.context:
            raise ProtocolError("the round's keys have not been exchanged yet")

    def shares(self) -> list[EncryptedShare]:
        """This site's seed and mask key, Shamir-shared and encrypted to every peer."""
        self._require_keys()
        n, t = len(self.participants), self.threshold
        seed_shares = shamir.split(int.from_bytes(self._seed, "big"), n, t)
        key_shares = shamir.split(int.from_bytes(secagg.private_key_bytes(self._mask), "big"), n, t)
        out = []
        for position, name in enumerate(self.participants):
            x, seed_y, key_y = position + 1, seed_shares[position].y, key_shares[position].y
            if name == self.site:
                self._held[name] = (x, seed_y, key_y)
                continue
            plaintext = struct.pack(">I", x) + shamir.to_bytes(seed_y) + shamir.to_bytes(key_y)
            nonce = os.urandom(12)
            key = _aead_key(self._encryption, self._peers[name].encryption_key, self.context)
            ciphertext = nonce + AESGCM(key).encrypt(nonce, plaintext, encode((self.context, self.site, name)))
            out.append(EncryptedShare(self.site, name, ciphertext))
        return out

    def receive_shares(self, shares: Sequence[EncryptedShare]) -> None:
        """Decrypt the shares every peer sent this site; refuses missing, extra or forged ones."""
        self._require_keys()
        senders = sorted(s.sender for s in shares)
        expected = sorted(p for p in self.participants if p != self.site)
        if senders != expected or any(s.recipient != self.site for s in shares):
            raise PrivacyError(f"site {self.site!r} expected shares from {expected}, received from {senders}")
        for share in shares:
            key = _aead_key(self._encryption, self._peers[share.sender].encryption_key, self.context)
            try:
                plaintext = AESGCM(key).decrypt(share.ciphertext[:12], share.ciphertext[12:],
                                                encode((self.context, share.sender, self.site)))
            except (InvalidTag, ValueError):
                raise PrivacyError(f"site {self.site!r}: the shares from {share.sender!r} do not decrypt "
                                   f"(forged or altered)") from None
            expected_x = self.index
            if len(plaintext) != 4 + 2 * shamir.SHARE_BYTES or struct.unpack(">I", plaintext[:4])[0] != expected_x:
                raise PrivacyError(f"site {self.site!r}: the shares from {share.sender!r} are for another point")
            seed_y = shamir.from_bytes(plaintext[4:4 + shamir.SHARE_BYTES])
            key_y = shamir.from_bytes(plaintext[4 + shamir.SHARE_BYTES:])
            self._held[share.sender] = (expected_x, seed_y, key_y)

    def masker(self) -> secagg.RoundMasker:
        """The masks of this round (pairwise with every participant, plus the self mask)."""
        self._require_keys()
        pairs = {name: secagg.pair_key(self._mask, self.site, name, ad.mask_key, self.context)
                 for name, ad in self._peers.items() if name != self.site}
        return secagg.RoundMasker(self.site, self._seed, pairs, self.context)

    def sign_survivors(self, survivors: Sequence[str]) -> SurvivorSignature:
        """Sign the survivor set (consistency check) after checking it is one this site can accept."""
        self._require_keys()
        chosen = tuple(sorted(set(survivors)))
        if len(chosen) != len(survivors) or not set(chosen) <= set(self.participants) or self.site not in chosen:
            raise PrivacyError(f"site {self.site!r} refuses the survivor set {list(survivors)}: it must be distinct "
                               f"participants including this site")
        if len(chosen) < max(self.threshold, self.min_survivors):
            raise PrivacyError(f"site {self.site!r} refuses to unmask over {len(chosen)} survivor(s): it needs at "
                               f"least {max(self.threshold, self.min_survivors)} (threshold {self.threshold}, "
                               f"its minimum {self.min_survivors})")
        if self._signed is not None and self._signed != chosen:
            raise PrivacyError(f"site {self.site!r} already signed another survivor set")
        self._signed = chosen
        message = survivors_message(self.context, chosen)
        return SurvivorSignature(self.site, chosen, roster_module.sign(self._identity, message))

    def reveal(self, signatures: Sequence[SurvivorSignature]) -> ShareReveal:
        """Shares of each survivor's seed and each dropped site's mask key, against >= t signatures."""
        if self._signed is None:
            raise ProtocolError("unmasking requested before this site signed a survivor set")
        if self._revealed:
            raise PrivacyError(f"site {self.site!r} has already revealed its shares for this round")
        message = survivors_message(self.context, self._signed)
        valid = set()
        for signature in signatures:
            entry = self.roster.get(signature.site)
            if signature.site in self._signed and entry is not None and tuple(sorted(signature.survivors)) == \
                    self._signed and roster_module.verify(entry.identity_key, message, signature.signature):
                valid.add(signature.site)
        if len(valid) < self.threshold:
            raise PrivacyError(f"site {self.site!r} refuses to unmask: {len(valid)} valid survivor signature(s) "
                               f"over the set it signed, threshold {self.threshold}")
        shares = []
        for owner in self.participants:
            x, seed_y, key_y = self._held[owner]
            if owner in self._signed:
                shares.append(RevealedShare(owner, SELF_MASK, x, shamir.to_bytes(seed_y)))
            else:
                shares.append(RevealedShare(owner, MASK_KEY, x, shamir.to_bytes(key_y)))
        self._revealed = True
        return ShareReveal(self.site, tuple(shares))

    @property
    def survivors(self) -> tuple[str, ...]:
        return self._signed or ()


# ---- the coordinator's side ---------------------------------------------------------------------------

def recover(context: bytes, advertisements: Mapping[str, KeyAdvertisement], survivors: Sequence[str],
            reveals: Sequence[ShareReveal], threshold: int) -> secagg.Unmasker:
    """Rebuild the survivors' seeds and the dropped sites' mask keys from ``>= threshold`` reveals.

    Checks every rebuilt secret against what its owner signed (the seed commitment, the mask public key),
    so a wrong share is an error, never a wrong result.
    """
    survivors = tuple(sorted(survivors))
    dropped = sorted(set(advertisements) - set(survivors))
    if len(reveals) < threshold:
        raise PrivacyError(f"only {len(reveals)} site(s) revealed their shares; the round needs {threshold}")
    pieces: dict[tuple[str, str], list[shamir.Share]] = {}
    for reveal in reveals:
        for share in reveal.shares:
            pieces.setdefault((share.owner, share.secret), []).append(shamir.Share(share.x, shamir.from_bytes(share.y)))
    self_keys = {}
    for site in survivors:
        seed = shamir.combine(pieces.get((site, SELF_MASK), []), threshold).to_bytes(32, "big")
        if hashlib.sha256(seed).digest() != advertisements[site].seed_commitment:
            raise PrivacyError(f"the revealed shares of {site!r}'s self-mask seed do not match its commitment")
        self_keys[site] = secagg.self_key(seed, site, context)
    pairs = {}
    for site in dropped:
        raw = shamir.combine(pieces.get((site, MASK_KEY), []), threshold).to_bytes(32, "big")
        key = X25519PrivateKey.from_private_bytes(raw)
        if secagg.public_key_bytes(key) != advertisements[site].mask_key:
            raise PrivacyError(f"the revealed shares of {site!r}'s mask key do not match its advertised key")
        for survivor in survivors:
            pairs[survivor, site] = secagg.pair_key(key, site, survivor, advertisements[survivor].mask_key, context)
    return secagg.Unmasker(self_keys, pairs)
