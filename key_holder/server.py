"""The key holder's gRPC server (``fedgwas keyholder serve``): decode, call :class:`KeyHolder`, encode.

Every call is authorised by the caller's mutual-TLS certificate (only the configured coordinators).
A refused decryption, whatever the reason, and any call of a caller who is not a coordinator get the
one answer ``PERMISSION_DENIED`` :data:`~key_holder.keys.REFUSAL`. Other known domain errors (of
registrations) become a status from the one table (:mod:`protos.status`), with an ``ErrorDetail`` in
the trailing metadata; anything else is a bug and surfaces as ``INTERNAL``. A decryption stream is
authorised and checked on its header before any ciphertext byte is buffered, and may carry at most
what the registered block can take; stalled or excess calls are cut or refused by
:mod:`protos.guards`. The server binds port 0 on request and reports its address in a ready file,
like the site agents.
"""

from __future__ import annotations

import fcntl
import logging
import resource
from pathlib import Path
from typing import ContextManager, Iterator

import grpc
import numpy as np

from engine.errors import ConfigError, FedGwasError
from key_holder.keys import DEFAULT_REFUSAL_BUDGET, BlockRequest, KeyHolder, KeyHolderRefusal, load_key_files
from key_holder.store import STORE_FILE, KeyHolderStore
from protos import key_holder_pb2 as pb
from protos import key_holder_pb2_grpc as pb_grpc
from protos.guards import CallCut, CallGuards, ServerMeter, Watch
from protos.key_holder_serde import (aggregate_header_from_message, ciphertext_from_messages, registration_from_proto,
                                     totals_to_protos)
from protos.limits import CHUNK_BYTES, ServerLimits
from protos.pki import TlsFiles
from protos.servers import make_grpc_server, serve_until_signal
from protos.status import abort_with
from protos.tls import peer_identity

log = logging.getLogger("key_holder.keys")

SERVICE_NAME = "protos.key_holder.KeyHolder"


def _abort(context: grpc.ServicerContext, error: FedGwasError) -> None:
    abort_with(context, error, pb.ErrorDetail(kind=type(error).__name__, message=str(error)))


def _block_request(header: pb.AggregateHeader) -> BlockRequest:
    return BlockRequest(header.registration_id, header.study_id, header.round, header.block, header.n_values,
                        header.total_bytes, tuple(header.tag_offsets))


class KeyHolderServicer(pb_grpc.KeyHolderServicer):
    def __init__(self, holder: KeyHolder, limits: ServerLimits = ServerLimits(),
                 meter: ServerMeter | None = None) -> None:
        self.holder = holder
        self.limits = limits
        self.guards = CallGuards(limits, meter)
        self.meter = self.guards.meter

    def _guarded(self, context: grpc.ServicerContext, caller: str | None) -> ContextManager[Watch]:
        """The call's admission (a small pool for callers who are not coordinators) and its watch."""
        return self.guards.call(context, caller, self.holder.is_coordinator(caller),
                                "too many calls in progress from this caller")

    def GetPublicContext(self, request: pb.ContextRequest, context: grpc.ServicerContext) -> Iterator[pb.ContextChunk]:
        caller = peer_identity(context)
        with self._guarded(context, caller) as watch:
            try:
                self.holder.authorise(caller, "fetch the public context")
            except KeyHolderRefusal as refusal:
                _abort(context, refusal)
            yield from watch.replies(self._context_chunks(), self.limits.idle_seconds)

    def _context_chunks(self) -> Iterator[pb.ContextChunk]:
        data = self.holder.public
        for offset in range(0, len(data), CHUNK_BYTES):
            yield pb.ContextChunk(sha256=self.holder.fingerprint, total_bytes=len(data), offset=offset,
                                  data=data[offset: offset + CHUNK_BYTES])

    def RegisterRound(self, request: pb.RoundRegistration, context: grpc.ServicerContext) -> pb.RegistrationReceipt:
        caller = peer_identity(context)
        with self._guarded(context, caller):
            try:
                registration_id, n_blocks = self.holder.register(registration_from_proto(request), caller)
            except FedGwasError as error:
                log.warning("registration refused: %s", getattr(error, "reason", error))
                _abort(context, error)
                raise  # unreachable: abort raises
        return pb.RegistrationReceipt(n_blocks=n_blocks, registration_id=registration_id)

    def DecryptAggregate(self, request_iterator: Iterator[pb.AggregateMessage],
                         context: grpc.ServicerContext) -> Iterator[pb.TotalsChunk]:
        caller = peer_identity(context)
        with self._guarded(context, caller) as watch:
            try:
                totals = self._decrypt(caller, request_iterator, watch)
            except KeyHolderRefusal as refusal:
                _abort(context, refusal)
                return
            if totals is None:  # the caller went away or stalled: nothing was decrypted
                return
            yield from watch.replies(totals_to_protos(totals), self.limits.idle_seconds)

    def _decrypt(self, caller: str | None, messages: Iterator[pb.AggregateMessage], watch: Watch) -> np.ndarray | None:
        """Authorise, read the header, admit the block, then (only then) read and decrypt the ciphertext."""
        self.holder.authorise(caller, "decrypt an aggregate")
        request = None
        try:
            request = _block_request(aggregate_header_from_message(watch.receive(messages, self.limits.header_seconds)))
            self.holder.begin(caller, request)
            ciphertext = ciphertext_from_messages(watch.messages(messages, self.limits.idle_seconds,
                                                                 self.limits.upload_seconds),
                                                  request.total_bytes, self.meter.add)
        except KeyHolderRefusal:
            raise
        except FedGwasError as error:
            raise self.holder.abandon(caller, request, error) from None
        except CallCut:
            if request is not None:
                self.holder.cancel(request)
            log.warning("decryption stream of %s cut (stalled or cancelled); nothing was decrypted", caller)
            return None
        return self.holder.finish(caller, request, ciphertext)


def make_server(holder: KeyHolder, address: str, tls: TlsFiles | None = None, limits: ServerLimits = ServerLimits(),
                meter: ServerMeter | None = None) -> tuple[grpc.Server, int]:
    """A server (not yet started) bound to ``address`` (port 0: a free port); returns ``(server, port)``.

    With ``tls`` the port serves mutual TLS only (clients need a certificate from the same CA);
    without, plaintext (``--insecure``, development only). ``meter`` counts buffered ciphertext bytes.
    """
    servicer = KeyHolderServicer(holder, limits, meter)
    return make_grpc_server(lambda server: pb_grpc.add_KeyHolderServicer_to_server(servicer, server), SERVICE_NAME,
                            address, tls, limits=limits, thread_name="key-holder-rpc")


def open_holder(keys: Path, coordinators: tuple[str, ...], min_participants: int = 2,
                refusal_budget: int = DEFAULT_REFUSAL_BUDGET) -> KeyHolder:
    """The key holder of the keys directory ``keys``, with its store ``keys/key_holder.sqlite``."""
    context, public = load_key_files(keys)
    return KeyHolder(context, public, KeyHolderStore(keys / STORE_FILE), coordinators,
                     min_participants=min_participants, refusal_budget=refusal_budget)


def serve(keys: Path, listen: str, ready_file: str | None, coordinators: tuple[str, ...], min_participants: int = 2,
          refusal_budget: int = DEFAULT_REFUSAL_BUDGET, tls: TlsFiles | None = None) -> None:
    """Serve until SIGTERM/SIGINT; writes ``{"address", "pid", "sha256"}`` to ``ready_file`` once up.

    Only one key holder may serve a keys directory at a time (an exclusive lock on ``serve.lock``).
    """
    holder = open_holder(keys, coordinators, min_participants, refusal_budget)
    lock_file = open(keys / "serve.lock", "a")
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise ConfigError(f"another key holder is already serving {str(keys)!r}") from None
    server, port = make_server(holder, listen, tls=tls)
    log.info("key holder serving on port %d (context %s) for coordinator(s) %s", port, holder.fingerprint[:16],
             ", ".join(coordinators))

    def report(signum: int) -> None:
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        log.info("stopping after %d released blocks, peak RSS %.0f MiB", holder.decrypted_blocks, peak_mib)

    serve_until_signal(server, listen, port, ready_file, {"sha256": holder.fingerprint}, on_stop=report)
    lock_file.close()
