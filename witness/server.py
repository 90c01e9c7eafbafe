"""The witness's gRPC server (``fedgwas witness serve``): decode, call :class:`WitnessStore`, encode.

A refused head is ``FAILED_PRECONDITION`` (:class:`HeadError`: it contradicts what the witness holds) or
``INVALID_ARGUMENT`` (:class:`ProtocolError`: malformed, or its signature does not verify), through the
one error table (protos/status.py); anything else is a bug (``INTERNAL``). The server binds port 0 on
request.
"""

from __future__ import annotations

import logging
from pathlib import Path

import grpc

from engine.errors import HeadError, ProtocolError
from protos import witness_pb2 as pb
from protos import witness_pb2_grpc as pb_grpc
from protos.servers import make_grpc_server, serve_until_signal
from protos.status import abort_with
from protos.witness_client import cosignature_to_proto, head_from_proto, head_to_proto
from witness.store import WitnessStore

log = logging.getLogger("witness")


class WitnessServicer(pb_grpc.WitnessServicer):
    def __init__(self, store: WitnessStore) -> None:
        self.store = store

    def Submit(self, request: pb.SignedHead, context: grpc.ServicerContext) -> pb.Cosignature:
        head = head_from_proto(request)
        try:
            try:
                head.verify()
            except HeadError as error:  # malformed, or a signature that does not verify: bad input
                raise ProtocolError(str(error)) from None
            return cosignature_to_proto(self.store.submit(head))  # HeadError: contradicts a held head
        except (ProtocolError, HeadError) as error:
            abort_with(context, error, pb.ErrorDetail(kind=type(error).__name__, message=str(error)))
            raise  # unreachable: abort raises

    def GetHeads(self, request: pb.GetHeadsRequest, context: grpc.ServicerContext) -> pb.GetHeadsResponse:
        sites = [request.site] if request.site else self.store.sites()
        held = [pair for site in sites for pair in self.store.heads(site)]
        if request.latest_only:
            latest: dict[str, tuple] = {}
            for pair in held:
                latest[pair[0].site] = pair
            held = list(latest.values())
        return pb.GetHeadsResponse(
            heads=[pb.WitnessedHead(head=head_to_proto(h), cosignature=cosignature_to_proto(c)) for h, c in held],
            witness_key=self.store.public_key)


def make_server(store: WitnessStore, address: str) -> tuple[grpc.Server, int]:
    """A server (not yet started) bound to ``address`` (port 0: a free port); returns ``(server, port)``.

    Plaintext gRPC: everything a witness receives and returns is signed and public (see docs/audit.md).
    """
    servicer = WitnessServicer(store)
    return make_grpc_server(lambda server: pb_grpc.add_WitnessServicer_to_server(servicer, server),
                            "protos.witness.Witness", address, None, thread_name="witness-rpc")


def serve(directory: Path, listen: str, ready_file: str | None) -> None:
    """Serve until SIGTERM/SIGINT; writes ``{"address", "pid", "key"}`` to ``ready_file`` once up."""
    store = WitnessStore(directory)
    server, port = make_server(store, listen)
    log.info("witness serving on port %d (key %s)", port, store.public_key.hex()[:16])
    serve_until_signal(server, listen, port, ready_file, {"key": store.public_key.hex()})
