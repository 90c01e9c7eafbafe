"""The witness's wire format on the client side: signed heads to and from protobuf, and a small client.

Used by the site (to publish its head after every append), by the coordinator's serde (the head in a
``TaskSummary``) and by the auditor (to read what the witness holds). The witness sees only heads
(site name, sequence number, hash, time, signatures): nothing about the tasks themselves.
"""

from __future__ import annotations

import grpc

from engine.audit.heads import Cosignature, SignedHead
from engine.errors import FedGwasError, HeadError, InputError
from protos import witness_pb2 as pb
from protos import witness_pb2_grpc as pb_grpc
from protos.status import error_detail

#: Deadline of every witness call, seconds.
TIMEOUT_SECONDS = 10.0


def head_to_proto(head: SignedHead) -> pb.SignedHead:
    return pb.SignedHead(site=head.site, seq=head.seq, hash=head.hash, time=head.time,
                         public_key=head.public_key, signature=head.signature)


def head_from_proto(message: pb.SignedHead) -> SignedHead:
    return SignedHead(message.site, message.seq, message.hash, message.time, bytes(message.public_key),
                      bytes(message.signature))


def cosignature_to_proto(cosignature: Cosignature) -> pb.Cosignature:
    return pb.Cosignature(witness_key=cosignature.witness_key, time=cosignature.time, signature=cosignature.signature)


def cosignature_from_proto(message: pb.Cosignature) -> Cosignature:
    return Cosignature(bytes(message.witness_key), message.time, bytes(message.signature))


class WitnessClient:
    """A channel to one witness (plaintext gRPC: everything it carries is signed and public)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._channel = grpc.insecure_channel(address)
        self._stub = pb_grpc.WitnessStub(self._channel)

    def _refusal(self, error: grpc.RpcError) -> FedGwasError:
        """A refused head (the witness's ErrorDetail) as :class:`HeadError`; anything else as unreachable."""
        detail = error_detail(error, pb.ErrorDetail)
        if detail is not None:
            return HeadError(f"witness {self.address} refused ({detail.kind}): {detail.message}")
        code = error.code() if hasattr(error, "code") else None
        return InputError(f"witness {self.address} cannot be reached ({getattr(code, 'name', code)})")

    def submit(self, head: SignedHead) -> Cosignature:
        """Have the witness co-sign ``head`` (verified here); raises HeadError if it refuses."""
        try:
            response = self._stub.Submit(head_to_proto(head), timeout=TIMEOUT_SECONDS)
        except grpc.RpcError as error:
            raise self._refusal(error) from None
        return cosignature_from_proto(response).verify(head)

    def heads(self, site: str, latest_only: bool = False) -> tuple[bytes, list[tuple[SignedHead, Cosignature]]]:
        """The witness's key and every head it holds for ``site`` (oldest first), co-signatures checked."""
        try:
            response = self._stub.GetHeads(pb.GetHeadsRequest(site=site, latest_only=latest_only),
                                           timeout=TIMEOUT_SECONDS)
        except grpc.RpcError as error:
            raise self._refusal(error) from None
        held = [(head_from_proto(w.head), cosignature_from_proto(w.cosignature)) for w in response.heads]
        for head, cosignature in held:
            head.verify()
            cosignature.verify(head)
            if cosignature.witness_key != response.witness_key:
                raise HeadError(f"witness {self.address} returned a head co-signed by another witness key")
        return bytes(response.witness_key), held

    def close(self) -> None:
        self._channel.close()
