"""The one gRPC server factory every service uses (site agent, key holder, witness).

It applies the protocol's message limits, registers the standard health service, and binds mutual
TLS (or, for development only, plaintext). Binding port 0 picks a free port, so tests run in
parallel; the factory returns ``(server, port)``, not yet started.
"""

from __future__ import annotations

from concurrent import futures
from typing import Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from engine.errors import ConfigError
from protos.limits import MESSAGE_OPTIONS
from protos.pki import TlsFiles
from protos.tls import server_credentials


def make_grpc_server(register: Callable[[grpc.Server], None], service_name: str, address: str,
                     tls: TlsFiles | None, *, max_workers: int = 4, thread_name: str = "rpc",
                     options: tuple[tuple[str, object], ...] = ()) -> tuple[grpc.Server, int]:
    """A server with ``register(server)``'s servicer and a health service, bound to ``address``.

    ``tls`` serves mutual TLS only (clients need a certificate from the same CA); ``None`` serves
    plaintext (development only). A bad or busy address is a :class:`ConfigError` naming it.
    """
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=thread_name),
                         options=[*MESSAGE_OPTIONS, *options])
    register(server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", service_name):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    try:
        port = server.add_insecure_port(address) if tls is None else \
            server.add_secure_port(address, server_credentials(tls))
    except RuntimeError as exc:
        raise ConfigError(f"cannot listen on {address!r}: {exc}") from None
    if port == 0:
        raise ConfigError(f"cannot listen on {address!r} (address in use or invalid)")
    return server, port
