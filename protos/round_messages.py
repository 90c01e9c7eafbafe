"""Wire format of the secure-aggregation round phases, both directions side by side.

Converts the messages of :mod:`engine.privacy.secure_round` to and from protobuf, for the coordinator
and the site alike; every incoming field is checked for size so that a hostile peer cannot make
either side hold more than a few kilobytes per participant.
"""

from __future__ import annotations

from typing import Sequence

from engine.errors import ProtocolError
from engine.privacy.secure_round import (EncryptedShare, KeyAdvertisement, RevealedShare, ShareReveal,
                                         SurvivorSignature)
from protos import site_agent_pb2 as pb

MAX_PARTICIPANTS = 256
MAX_FIELD_BYTES = 1024
MAX_NAME = 256


def _bytes(value: bytes, what: str) -> bytes:
    if len(value) > MAX_FIELD_BYTES:
        raise ProtocolError(f"{what} has {len(value)} bytes, at most {MAX_FIELD_BYTES} allowed")
    return bytes(value)


def _name(value: str, what: str) -> str:
    if not value or len(value) > MAX_NAME:
        raise ProtocolError(f"{what} must be a site name of 1 to {MAX_NAME} characters")
    return value


def _count(items: Sequence[object], what: str) -> None:
    if len(items) > MAX_PARTICIPANTS:
        raise ProtocolError(f"{what} lists {len(items)} entries, at most {MAX_PARTICIPANTS} allowed")


def advertisement_to_proto(ad: KeyAdvertisement) -> pb.KeyAdvertisement:
    return pb.KeyAdvertisement(site_name=ad.site, encryption_key=ad.encryption_key, mask_key=ad.mask_key,
                               nonce=ad.nonce, task_digest=ad.task_digest, signature=ad.signature,
                               seed_commitment=ad.seed_commitment)


def advertisement_from_proto(message: pb.KeyAdvertisement) -> KeyAdvertisement:
    return KeyAdvertisement(_name(message.site_name, "KeyAdvertisement.site_name"),
                            _bytes(message.encryption_key, "KeyAdvertisement.encryption_key"),
                            _bytes(message.mask_key, "KeyAdvertisement.mask_key"),
                            _bytes(message.nonce, "KeyAdvertisement.nonce"),
                            _bytes(message.seed_commitment, "KeyAdvertisement.seed_commitment"),
                            _bytes(message.task_digest, "KeyAdvertisement.task_digest"),
                            _bytes(message.signature, "KeyAdvertisement.signature"))


def peer_keys_to_proto(ads: Sequence[KeyAdvertisement]) -> pb.TaskMessage:
    return pb.TaskMessage(peer_keys=pb.PeerKeys(keys=[advertisement_to_proto(a) for a in ads]))


def peer_keys_from_proto(message: pb.PeerKeys) -> list[KeyAdvertisement]:
    _count(message.keys, "PeerKeys.keys")
    return [advertisement_from_proto(k) for k in message.keys]


def shares_to_proto(shares: Sequence[EncryptedShare]) -> pb.EncryptedShares:
    return pb.EncryptedShares(shares=[pb.EncryptedShare(sender=s.sender, recipient=s.recipient,
                                                        ciphertext=s.ciphertext) for s in shares])


def shares_from_proto(message: pb.EncryptedShares) -> list[EncryptedShare]:
    _count(message.shares, "EncryptedShares.shares")
    return [EncryptedShare(_name(s.sender, "EncryptedShare.sender"), _name(s.recipient, "EncryptedShare.recipient"),
                           _bytes(s.ciphertext, "EncryptedShare.ciphertext")) for s in message.shares]


def survivor_signature_to_proto(signature: SurvivorSignature) -> pb.SurvivorSignature:
    return pb.SurvivorSignature(site_name=signature.site, sites=list(signature.survivors),
                                signature=signature.signature)


def survivor_signature_from_proto(message: pb.SurvivorSignature) -> SurvivorSignature:
    _count(message.sites, "SurvivorSignature.sites")
    return SurvivorSignature(_name(message.site_name, "SurvivorSignature.site_name"),
                             tuple(_name(s, "SurvivorSignature.sites") for s in message.sites),
                             _bytes(message.signature, "SurvivorSignature.signature"))


def reveal_to_proto(reveal: ShareReveal) -> pb.ShareReveal:
    return pb.ShareReveal(site_name=reveal.site, shares=[
        pb.RevealedShare(owner=s.owner, secret=s.secret, x=s.x, y=s.y) for s in reveal.shares])


def reveal_from_proto(message: pb.ShareReveal) -> ShareReveal:
    _count(message.shares, "ShareReveal.shares")
    return ShareReveal(_name(message.site_name, "ShareReveal.site_name"), tuple(
        RevealedShare(_name(s.owner, "RevealedShare.owner"), s.secret, s.x, _bytes(s.y, "RevealedShare.y"))
        for s in message.shares))
