"""Building the site agent's gRPC server (with the standard health service)."""

from __future__ import annotations

import grpc

from protos import site_agent_pb2_grpc as pb_grpc
from protos.servers import make_grpc_server
from site_agent.data import SiteData
from site_agent.servicer import SiteAgentServicer

SERVICE_NAME = "protos.site_agent.SiteAgent"


def make_server(data: SiteData, address: str, max_workers: int = 4) -> tuple[grpc.Server, int]:
    """A server (not yet started) bound to ``address``; returns ``(server, port)``.

    ``address`` may use port 0 to bind a free port (tests, ``fedgwas local``). The port serves mutual
    TLS with the site's ``[tls]`` certificates (clients must present a certificate from the same CA);
    plaintext only when the config says ``[tls] insecure = true``.
    """
    servicer = SiteAgentServicer(data)
    return make_grpc_server(lambda server: pb_grpc.add_SiteAgentServicer_to_server(servicer, server), SERVICE_NAME,
                            address, data.config.tls, max_workers=max_workers, thread_name="site-rpc")
