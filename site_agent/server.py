"""Building and running the site agent's gRPC server (with the standard health service)."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from engine.errors import ConfigError
from protos import site_agent_pb2_grpc as pb_grpc
from protos.limits import ServerLimits, ServerMeter, new_server
from site_agent.data import SiteData
from site_agent.servicer import SiteAgentServicer
from site_agent.tls import server_credentials

SERVICE_NAME = "protos.site_agent.SiteAgent"


def make_server(data: SiteData, address: str, limits: ServerLimits = ServerLimits(),
                meter: ServerMeter | None = None) -> tuple[grpc.Server, int]:
    """A started-ready (not yet started) server bound to ``address``; returns ``(server, port)``.

    ``address`` may use port 0 to bind a free port (tests, ``fedgwas local``). The port serves mutual
    TLS with the site's ``[tls]`` certificates (clients must present a certificate from the same CA);
    plaintext only when the config says ``[tls] insecure = true``. ``limits`` bound concurrency,
    stalls and payload sizes (:mod:`protos.limits`); ``meter`` counts what they did.
    """
    server = new_server(limits, "site-rpc")
    pb_grpc.add_SiteAgentServicer_to_server(SiteAgentServicer(data, limits, meter), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    try:
        if data.config.tls is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, server_credentials(data.config.tls))
    except RuntimeError as exc:
        raise ConfigError(f"cannot listen on {address!r}: {exc}") from None
    if port == 0:
        raise ConfigError(f"cannot listen on {address!r} (address in use or invalid)")
    return server, port
