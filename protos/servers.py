"""The one gRPC server factory every service uses (site agent, key holder, witness).

It applies the protocol's message limits and the server's :class:`~protos.limits.ServerLimits` (one
thread per admitted call, gRPC ``maximum_concurrent_rpcs`` to match, so an excess call is refused at
once rather than queued behind stalled ones), registers the standard health service, and binds mutual
TLS (or, for development only, plaintext). Binding port 0 picks a free port, so tests run in
parallel; the factory returns ``(server, port)``, not yet started.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from concurrent import futures
from pathlib import Path
from typing import Callable, Mapping

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from engine.errors import ConfigError
from protos.limits import MESSAGE_OPTIONS, ServerLimits
from protos.pki import TlsFiles
from protos.tls import server_credentials

log = logging.getLogger("protos")


def make_grpc_server(register: Callable[[grpc.Server], None], service_name: str, address: str,
                     tls: TlsFiles | None, *, limits: ServerLimits = ServerLimits(), thread_name: str = "rpc",
                     options: tuple[tuple[str, object], ...] = ()) -> tuple[grpc.Server, int]:
    """A server with ``register(server)``'s servicer and a health service, bound to ``address``.

    ``tls`` serves mutual TLS only (clients need a certificate from the same CA); ``None`` serves
    plaintext (development only). A bad or busy address is a :class:`ConfigError` naming it.
    """
    threads = futures.ThreadPoolExecutor(max_workers=limits.max_concurrent_rpcs, thread_name_prefix=thread_name)
    server = grpc.server(threads, options=[*MESSAGE_OPTIONS, *options],
                         maximum_concurrent_rpcs=limits.max_concurrent_rpcs)
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


def loopback_address(listen: str, port: int) -> str:
    """The address clients on this machine use for a server listening on ``listen`` (wildcards -> 127.0.0.1)."""
    host = listen.rsplit(":", 1)[0]
    return f"{'127.0.0.1' if host in ('0.0.0.0', '[::]', '') else host}:{port}"


def serve_until_signal(server: grpc.Server, listen: str, port: int, ready_file: str | None,
                       ready: Mapping[str, object] | None = None,
                       on_stop: Callable[[int], None] | None = None) -> None:
    """Start ``server``, announce it in ``ready_file``, and serve until SIGTERM or SIGINT.

    ``ready_file`` (written to a temporary file, then renamed, so a reader never sees half of it)
    gets ``{"address", "pid"}`` and the service's own fields in ``ready``. ``on_stop(signal)`` runs
    when the signal arrives (e.g. a final log line); the server then gets 5 s to finish its calls.
    """
    stopped = threading.Event()

    def stop(signum: int, frame: object) -> None:
        log.info("signal %d: shutting down", signum)
        if on_stop is not None:
            on_stop(signum)
        stopped.set()

    # The handlers go in before the ready file announces the server: a caller that stops the server as
    # soon as it is announced must get a clean stop, not the default action of the signal.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.start()
    if ready_file:
        tmp = Path(f"{ready_file}.tmp")
        tmp.write_text(json.dumps({"address": loopback_address(listen, port), "pid": os.getpid(), **(ready or {})}),
                       encoding="utf-8")
        tmp.replace(ready_file)
    while not stopped.wait(0.5):  # wakes the main thread regularly, so the handler runs promptly
        pass
    server.stop(grace=5).wait()
