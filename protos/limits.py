"""Sizes and limits of the wire protocol, in one place for every service (site agent, key holder, witness).

Large payloads are streamed in chunks of :data:`CHUNK_BYTES`, so no message needs more than
:data:`MAX_MESSAGE_BYTES`; servers and channels refuse anything larger at the gRPC layer.
:class:`ServerLimits` bounds what callers may hold of a server (enforced by :mod:`protos.guards`).
"""

from __future__ import annotations

from dataclasses import dataclass

#: Bytes per chunk of a streamed array, result block, ciphertext or aggregate.
CHUNK_BYTES = 1 << 20
#: Largest single gRPC message either side accepts (a chunk plus its framing, with room to spare).
MAX_MESSAGE_BYTES = 8 << 20
#: Largest result block (or encrypted aggregate) a receiver reassembles.
MAX_BLOCK_BYTES = 1 << 31
#: Variants per manifest chunk of a Describe stream.
MANIFEST_CHUNK_VARIANTS = 20_000
#: Named input arrays per task, elements per array, and characters per name.
MAX_ARRAYS = 16
MAX_ARRAY_ELEMENTS = 50_000_000
MAX_NAME_LENGTH = 256
#: Channel and server options that apply the message limit.
MESSAGE_OPTIONS = (("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                   ("grpc.max_send_message_length", MAX_MESSAGE_BYTES))
#: Most bytes the arrays of one task may declare in all (a server may set a lower limit).
MAX_TASK_BYTES = 2 << 30


@dataclass(frozen=True)
class ServerLimits:
    """What callers may hold of one server (:mod:`protos.guards`); the defaults suit a site or key holder.

    ``max_concurrent_rpcs`` threads and gRPC ``maximum_concurrent_rpcs`` (beyond: RESOURCE_EXHAUSTED
    at once, never queued); ``per_peer_rpcs`` calls per certificate identity; ``untrusted_rpcs``
    shared by identities no rule could authorise; ``work_slots`` computations at once; a first
    message within ``header_seconds``; no wait on the peer longer than ``idle_seconds``; a payload
    complete within ``upload_seconds`` of its header; at most ``max_payload_bytes`` of it.
    """

    max_concurrent_rpcs: int = 32
    per_peer_rpcs: int = 8
    untrusted_rpcs: int = 2
    work_slots: int = 4
    header_seconds: float = 10.0
    idle_seconds: float = 120.0
    upload_seconds: float = 900.0
    max_payload_bytes: int = MAX_TASK_BYTES

    def __post_init__(self) -> None:
        counts = {"max_concurrent_rpcs": self.max_concurrent_rpcs, "per_peer_rpcs": self.per_peer_rpcs,
                  "untrusted_rpcs": self.untrusted_rpcs, "work_slots": self.work_slots}
        bad = {k: v for k, v in counts.items() if not isinstance(v, int) or v < 1}
        if bad or min(self.header_seconds, self.idle_seconds, self.upload_seconds) <= 0 or self.max_payload_bytes < 1:
            raise ValueError(f"server limits must be positive, got {self}")
        if self.untrusted_rpcs >= self.max_concurrent_rpcs or self.per_peer_rpcs >= self.max_concurrent_rpcs:
            raise ValueError("untrusted_rpcs and per_peer_rpcs must leave room below max_concurrent_rpcs: "
                             f"got {self.untrusted_rpcs}, {self.per_peer_rpcs} of {self.max_concurrent_rpcs}")
