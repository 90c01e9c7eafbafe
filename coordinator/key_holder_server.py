"""The key holder's gRPC server (``fedgwas keyholder serve``): decode, call :class:`KeyHolder`, encode.

Known domain errors become a status from one table, with an ``ErrorDetail`` in the trailing metadata;
anything else is a bug and surfaces as ``INTERNAL``. The server binds port 0 on request and reports
its address in a ready file, like the site agents.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import signal
import threading
from concurrent import futures
from pathlib import Path
from typing import Iterable, Iterator

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from coordinator.key_holder import KeyHolder, RoundRegistration, load_key_files
from engine.errors import ConfigError, FedGwasError, InputError, PrivacyError, ProtocolError, RingOverflowError
from protos import key_holder_pb2 as pb
from protos import key_holder_pb2_grpc as pb_grpc
from site_agent.pki import TlsFiles
from site_agent.tls import server_credentials

log = logging.getLogger("coordinator.key_holder")

SERVICE_NAME = "protos.key_holder.KeyHolder"
ERROR_METADATA_KEY = "fedgwas-error-bin"
CHUNK_BYTES = 1 << 20
MAX_MESSAGE_BYTES = 8 << 20
MAX_AGGREGATE_BYTES = 1 << 31

#: Domain error -> gRPC status. Order matters: subclasses before their bases.
STATUS_FOR_ERROR: tuple[tuple[type[FedGwasError], grpc.StatusCode], ...] = (
    (ProtocolError, grpc.StatusCode.INVALID_ARGUMENT),
    (ConfigError, grpc.StatusCode.FAILED_PRECONDITION),
    (InputError, grpc.StatusCode.INVALID_ARGUMENT),
    (PrivacyError, grpc.StatusCode.PERMISSION_DENIED),
    (RingOverflowError, grpc.StatusCode.OUT_OF_RANGE),
)


def _abort(context: grpc.ServicerContext, error: FedGwasError) -> None:
    code = next((status for kind, status in STATUS_FOR_ERROR if isinstance(error, kind)), None)
    if code is None:
        raise error  # an unmapped domain error is a bug: let gRPC report INTERNAL
    detail = pb.ErrorDetail(kind=type(error).__name__, message=str(error))
    context.set_trailing_metadata(((ERROR_METADATA_KEY, detail.SerializeToString()),))
    context.abort(code, str(error))


def registration_from_proto(message: pb.RoundRegistration) -> RoundRegistration:
    return RoundRegistration(
        study_id=message.study_id, round=message.round, participants=tuple(message.participants),
        block_values=tuple(int(v) for v in message.block_values), encoding=message.encoding,
        context_sha256=message.context_sha256, requester=message.requester,
    )


def aggregate_from_messages(messages: Iterable[pb.AggregateMessage]) -> tuple[pb.AggregateHeader, bytes]:
    """The header and the reassembled ciphertext of one DecryptAggregate stream, checked for order and size."""
    iterator = iter(messages)
    first = next(iterator, None)
    if first is None or first.WhichOneof("payload") != "header":
        raise ProtocolError("a DecryptAggregate stream must start with an AggregateHeader")
    header = first.header
    if not 0 < header.total_bytes <= MAX_AGGREGATE_BYTES:
        raise ProtocolError(f"aggregate.total_bytes {header.total_bytes} is out of range")
    buffer = bytearray()
    for message in iterator:
        if message.WhichOneof("payload") != "chunk":
            raise ProtocolError("only AggregateChunk messages may follow the AggregateHeader")
        chunk = message.chunk
        if chunk.offset != len(buffer) or len(buffer) + len(chunk.data) > header.total_bytes:
            raise ProtocolError(f"aggregate chunk at offset {chunk.offset} is out of sequence or too long")
        buffer.extend(chunk.data)
    if len(buffer) != header.total_bytes:
        raise ProtocolError(f"the aggregate ciphertext is truncated ({len(buffer)} of {header.total_bytes} bytes)")
    return header, bytes(buffer)


def totals_to_protos(totals: np.ndarray) -> Iterator[pb.TotalsChunk]:
    raw = np.ascontiguousarray(totals, dtype="<f8").tobytes()
    step = CHUNK_BYTES - CHUNK_BYTES % 8
    for offset in range(0, len(raw), step):
        yield pb.TotalsChunk(total_values=len(totals), offset=offset // 8, data=raw[offset: offset + step])


class KeyHolderServicer(pb_grpc.KeyHolderServicer):
    def __init__(self, holder: KeyHolder) -> None:
        self.holder = holder

    def GetPublicContext(self, request: pb.ContextRequest, context: grpc.ServicerContext) -> Iterator[pb.ContextChunk]:
        data = self.holder.public
        for offset in range(0, len(data), CHUNK_BYTES):
            yield pb.ContextChunk(sha256=self.holder.fingerprint, total_bytes=len(data), offset=offset,
                                  data=data[offset: offset + CHUNK_BYTES])

    def RegisterRound(self, request: pb.RoundRegistration, context: grpc.ServicerContext) -> pb.RegistrationReceipt:
        try:
            n_blocks = self.holder.register(registration_from_proto(request))
        except FedGwasError as error:
            log.warning("registration refused: %s", error)
            _abort(context, error)
            raise  # unreachable: abort raises
        return pb.RegistrationReceipt(n_blocks=n_blocks)

    def DecryptAggregate(self, request_iterator: Iterator[pb.AggregateMessage],
                         context: grpc.ServicerContext) -> Iterator[pb.TotalsChunk]:
        try:
            header, ciphertext = aggregate_from_messages(request_iterator)
            totals = self.holder.decrypt(header.study_id, header.round, header.block, header.n_values, ciphertext)
        except FedGwasError as error:
            _abort(context, error)
            return
        yield from totals_to_protos(totals)


def make_server(holder: KeyHolder, address: str, max_workers: int = 4,
                tls: TlsFiles | None = None) -> tuple[grpc.Server, int]:
    """A server (not yet started) bound to ``address`` (port 0: a free port); returns ``(server, port)``.

    With ``tls`` the port serves mutual TLS only (clients need a certificate from the same CA);
    without, plaintext (``--insecure``, development only).
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="key-holder-rpc"),
        options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                 ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)],
    )
    pb_grpc.add_KeyHolderServicer_to_server(KeyHolderServicer(holder), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    try:
        if tls is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, server_credentials(tls))
    except RuntimeError as exc:
        raise ConfigError(f"cannot listen on {address!r}: {exc}") from None
    if port == 0:
        raise ConfigError(f"cannot listen on {address!r} (address in use or invalid)")
    return server, port


def serve(keys: Path, listen: str, ready_file: str | None, min_participants: int = 2,
          tls: TlsFiles | None = None) -> None:
    """Serve until SIGTERM/SIGINT; writes ``{"address", "pid", "sha256"}`` to ``ready_file`` once up."""
    context, public = load_key_files(keys)
    holder = KeyHolder(context, public, min_participants=min_participants)
    server, port = make_server(holder, listen, tls=tls)
    server.start()
    host = listen.rsplit(":", 1)[0]
    address = f"{'127.0.0.1' if host in ('0.0.0.0', '[::]', '') else host}:{port}"
    log.info("key holder serving on port %d (context %s)", port, holder.fingerprint[:16])
    if ready_file:
        tmp = Path(f"{ready_file}.tmp")
        tmp.write_text(json.dumps({"address": address, "pid": os.getpid(), "sha256": holder.fingerprint}),
                       encoding="utf-8")
        tmp.replace(ready_file)
    stopped = threading.Event()

    def stop(signum: int, frame: object) -> None:
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        log.info("signal %d: shutting down after %d released blocks, peak RSS %.0f MiB", signum,
                 holder.decrypted_blocks, peak_mib)
        stopped.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    stopped.wait()
    server.stop(grace=5).wait()
