"""The key-holder wire format in both directions: round registrations, encrypted aggregates, released totals.

Pairs side by side (``x_to_proto(s)`` beside ``x_from_proto(s)``); the coordinator sends registrations
and aggregates and reads totals, the key holder the other way round. Streams are checked for order
and size, so a malformed stream is a :class:`ProtocolError` (or, at the coordinator, a failed study).
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

import numpy as np

from engine.errors import ProtocolError
from engine.privacy.he_rounds import RoundRegistration
from protos import key_holder_pb2 as pb
from protos.limits import CHUNK_BYTES, MAX_BLOCK_BYTES


def registration_to_proto(registration: RoundRegistration) -> pb.RoundRegistration:
    return pb.RoundRegistration(
        study_id=registration.study_id, round=registration.round, participants=list(registration.participants),
        block_values=list(registration.block_values), encoding=registration.encoding,
        context_sha256=registration.context_sha256, requester=registration.requester)


def registration_from_proto(message: pb.RoundRegistration) -> RoundRegistration:
    return RoundRegistration(
        study_id=message.study_id, round=message.round, participants=tuple(message.participants),
        block_values=tuple(int(v) for v in message.block_values), encoding=message.encoding,
        context_sha256=message.context_sha256, requester=message.requester,
    )


def aggregate_header_from_message(message: pb.AggregateMessage | None) -> pb.AggregateHeader:
    """The header of a DecryptAggregate stream, from its first message (``None``: the stream was empty)."""
    if message is None or message.WhichOneof("payload") != "header":
        raise ProtocolError("a DecryptAggregate stream must start with an AggregateHeader")
    if not 0 < message.header.total_bytes <= MAX_BLOCK_BYTES:
        raise ProtocolError(f"aggregate.total_bytes {message.header.total_bytes} is out of range")
    return message.header


def ciphertext_from_messages(messages: Iterable[pb.AggregateMessage], total_bytes: int,
                             on_bytes: Callable[[int], None] | None = None) -> bytes:
    """The ciphertext following an (admitted) header: chunks in order, never more than ``total_bytes``
    buffered; ``on_bytes`` is told the size of every chunk accepted (the server's meter)."""
    buffer = bytearray()
    for message in messages:
        if message.WhichOneof("payload") != "chunk":
            raise ProtocolError("only AggregateChunk messages may follow the AggregateHeader")
        chunk = message.chunk
        if chunk.offset != len(buffer) or len(buffer) + len(chunk.data) > total_bytes:
            raise ProtocolError(f"aggregate chunk at offset {chunk.offset} is out of sequence or too long")
        buffer.extend(chunk.data)
        if on_bytes is not None:
            on_bytes(len(chunk.data))
    if len(buffer) != total_bytes:
        raise ProtocolError(f"the aggregate ciphertext is truncated ({len(buffer)} of {total_bytes} bytes)")
    return bytes(buffer)


def aggregate_to_messages(registration_id: str, study_id: str, round_: int, block: int, n_values: int,
                          ciphertext: bytes, tag_offsets: np.ndarray | None = None) -> Iterator[pb.AggregateMessage]:
    """One block's aggregate ciphertext as a header and chunks (the DecryptAggregate request stream);
    ``tag_offsets`` ``(n_ciphertexts, 2)``: what its tags sum to (``None``: zero)."""
    yield pb.AggregateMessage(header=pb.AggregateHeader(
        study_id=study_id, round=round_, block=block, n_values=n_values, total_bytes=len(ciphertext),
        registration_id=registration_id,
        tag_offsets=[] if tag_offsets is None else [int(v) for v in np.ravel(tag_offsets)]))
    view = memoryview(ciphertext)
    for offset in range(0, len(view), CHUNK_BYTES):
        yield pb.AggregateMessage(chunk=pb.AggregateChunk(offset=offset, data=bytes(view[offset: offset + CHUNK_BYTES])))


def totals_to_protos(totals: np.ndarray) -> Iterator[pb.TotalsChunk]:
    raw = np.ascontiguousarray(totals, dtype="<f8").tobytes()
    step = CHUNK_BYTES - CHUNK_BYTES % 8
    for offset in range(0, len(raw), step):
        yield pb.TotalsChunk(total_values=len(totals), offset=offset // 8, data=raw[offset: offset + step])


def totals_from_protos(chunks: Iterable[pb.TotalsChunk], n_values: int) -> np.ndarray:
    """Released totals ``(n_values,)`` float64 reassembled from the key holder's chunks, checked for order."""
    totals = np.empty(n_values, dtype=np.float64)
    filled = 0
    for chunk in chunks:
        values = np.frombuffer(chunk.data, dtype="<f8")
        if chunk.total_values != n_values or chunk.offset != filled or filled + len(values) > n_values:
            raise ProtocolError("the key holder's totals are out of sequence")
        totals[filled: filled + len(values)] = values
        filled += len(values)
    if filled != n_values:
        raise ProtocolError(f"the key holder returned {filled} of {n_values} totals")
    return totals
