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
from pathlib import Path
from typing import Iterator

import grpc

from key_holder.keys import KeyHolder, load_key_files
from engine.errors import FedGwasError
from protos import key_holder_pb2 as pb
from protos import key_holder_pb2_grpc as pb_grpc
from protos.pki import TlsFiles
from protos.key_holder_serde import aggregate_from_messages, registration_from_proto, totals_to_protos
from protos.limits import CHUNK_BYTES
from protos.servers import make_grpc_server
from protos.status import abort_with

log = logging.getLogger("key_holder.keys")

SERVICE_NAME = "protos.key_holder.KeyHolder"


def _abort(context: grpc.ServicerContext, error: FedGwasError) -> None:
    abort_with(context, error, pb.ErrorDetail(kind=type(error).__name__, message=str(error)))


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
    servicer = KeyHolderServicer(holder)
    return make_grpc_server(lambda server: pb_grpc.add_KeyHolderServicer_to_server(servicer, server), SERVICE_NAME,
                            address, tls, max_workers=max_workers, thread_name="key-holder-rpc")


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
