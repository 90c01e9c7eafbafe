"""The coordinator's connection to the key holder: public context, round registration, decryption.

Every call has a deadline. A failure is a :class:`~engine.errors.StudyFailed` naming the key holder
(not a site failure: no site is at fault, and a refused aggregate must not trigger a dropout restart).
"""

from __future__ import annotations

import logging
import time

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from engine.privacy.he_rounds import RoundRegistration
from engine.errors import ProtocolError, StudyFailed
from engine.privacy.he import context_fingerprint
from protos import key_holder_pb2 as pb
from protos import key_holder_pb2_grpc as pb_grpc
from protos.key_holder_serde import aggregate_to_messages, registration_to_proto, totals_from_protos
from protos.limits import MESSAGE_OPTIONS
from protos.status import error_detail
from protos.pki import TlsFiles
from protos.tls import channel

log = logging.getLogger("coordinator")



class KeyHolderClient:
    """gRPC client of one key holder; ``timeout`` bounds each call, ``connect_timeout`` the health wait."""

    def __init__(self, address: str, timeout: float = 3600.0, connect_timeout: float = 30.0,
                 tls: TlsFiles | None = None, server_name: str = "keyholder") -> None:
        """``tls``: mutual TLS with the key holder, whose certificate must name ``server_name``."""
        self.address = address
        self.timeout = timeout
        self.connect_timeout = min(connect_timeout, timeout)
        self._channel = channel(address, tls, server_name, options=list(MESSAGE_OPTIONS))
        self._stub = pb_grpc.KeyHolderStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def _failure(self, error: grpc.RpcError, what: str) -> StudyFailed:
        detail = error_detail(error, pb.ErrorDetail)
        if detail is not None:
            return StudyFailed(f"the key holder refused {what}: {detail.message}")
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        if code == grpc.StatusCode.UNAVAILABLE:
            return StudyFailed(f"the key holder is unreachable at {self.address} ({what})")
        details = error.details() if hasattr(error, "details") else str(error)
        return StudyFailed(f"the key holder failed {what}: {code.name}: {details}")

    def wait_healthy(self) -> None:
        """Wait (up to ``connect_timeout``) for the key holder to answer its health check."""
        stub = health_pb2_grpc.HealthStub(self._channel)
        deadline = time.monotonic() + self.connect_timeout
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=""), wait_for_ready=True,
                                  timeout=max(deadline - time.monotonic(), 0.001))
        except grpc.RpcError as error:
            raise self._failure(error, "the health check") from None
        if response.status != health_pb2.HealthCheckResponse.SERVING:
            raise StudyFailed(f"the key holder at {self.address} is not serving (status {response.status})")

    def public_context(self) -> bytes:
        """The serialised public context, checked against the SHA-256 the key holder announces."""
        buffer, announced = bytearray(), ""
        try:
            for chunk in self._stub.GetPublicContext(pb.ContextRequest(), timeout=self.connect_timeout * 4):
                if chunk.offset != len(buffer) or len(buffer) + len(chunk.data) > chunk.total_bytes:
                    raise StudyFailed("the key holder sent its context out of sequence")
                buffer.extend(chunk.data)
                announced = chunk.sha256
        except grpc.RpcError as error:
            raise self._failure(error, "to send its public context") from None
        data = bytes(buffer)
        if not data or context_fingerprint(data) != announced:
            raise StudyFailed("the key holder's public context does not match the fingerprint it announced")
        return data

    def register_round(self, registration: RoundRegistration) -> str:
        """Register a round; returns the registration id that its decryptions name."""
        request = registration_to_proto(registration)
        try:
            receipt = self._stub.RegisterRound(request, timeout=self.connect_timeout * 4)
        except grpc.RpcError as error:
            raise self._failure(error, f"to register round {registration.round}") from None
        if not receipt.registration_id or receipt.n_blocks != len(registration.block_values):
            raise StudyFailed(f"the key holder's receipt for round {registration.round} does not match "
                              "the registration")
        return receipt.registration_id

    def decrypt(self, registration_id: str, study_id: str, round_: int, block: int, n_values: int,
                ciphertext: bytes, tag_offsets: np.ndarray | None = None) -> np.ndarray:
        """Released totals ``(n_values,)`` float64 of one block's aggregate ciphertext, whose tags sum to
        ``tag_offsets`` ``(n_ciphertexts, 2)`` (``None``: zero)."""

        what = f"block {block} of round {round_}"
        try:
            return totals_from_protos(self._stub.DecryptAggregate(
                aggregate_to_messages(registration_id, study_id, round_, block, n_values, ciphertext, tag_offsets),
                timeout=self.timeout), n_values)
        except ProtocolError as error:
            raise StudyFailed(f"{error} for {what}") from None
        except grpc.RpcError as error:
            raise self._failure(error, what) from None


class RoundDecryptor:
    """An :class:`engine.privacy.protection.AggregateDecryptor` for one registered round of one study."""

    def __init__(self, client: KeyHolderClient, study_id: str, round_: int, registration_id: str) -> None:
        self.client, self.study_id, self.round, self.registration_id = client, study_id, round_, registration_id

    def decrypt(self, block: int, n_values: int, ciphertext: bytes, tag_offsets: np.ndarray) -> np.ndarray:
        return self.client.decrypt(self.registration_id, self.study_id, self.round, block, n_values, ciphertext,
                                   tag_offsets)
