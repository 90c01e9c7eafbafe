"""gRPC credentials for fedgwas's mutual TLS, shared by the site agent, the coordinator and the key holder.

Every channel is mutually authenticated: the server requires a client certificate signed by the
consortium CA (``require_client_auth=True``) and the client checks that the server's certificate,
signed by the same CA, names the party it meant to reach (``ssl_target_name_override`` = the site's
or key holder's name, so an address alone never decides who answers). The peer's identity is the
certificate's subject CN (:func:`peer_identity`), never a name the peer declares in a message.
"""

from __future__ import annotations

from typing import Sequence

import grpc

from protos.pki import TlsFiles

#: Label of results produced over channels without TLS (development only).
INSECURE_LABEL = "INSECURE TRANSPORT - development only: channels were not encrypted or authenticated"


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """Server credentials that demand a client certificate from the consortium CA."""
    ca, cert, key = files.read()
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)


def secure_channel(address: str, files: TlsFiles, server_name: str,
                   options: Sequence[tuple[str, object]] = ()) -> grpc.Channel:
    """A channel to ``address`` that presents ``files``' certificate and accepts only a server
    certificate from the CA whose name (CN/SAN) is ``server_name``."""
    ca, cert, key = files.read()
    credentials = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
    return grpc.secure_channel(address, credentials,
                               options=[*options, ("grpc.ssl_target_name_override", server_name)])


def channel(address: str, files: TlsFiles | None, server_name: str,
            options: Sequence[tuple[str, object]] = ()) -> grpc.Channel:
    """A mutual-TLS channel, or a plaintext one when ``files`` is None (explicitly insecure mode)."""
    if files is None:
        return grpc.insecure_channel(address, options=list(options))
    return secure_channel(address, files, server_name, options)


def peer_identity(context: grpc.ServicerContext) -> str | None:
    """The authenticated peer's certificate CN, or None on a channel without TLS."""
    try:
        auth = context.auth_context()
    except (AttributeError, NotImplementedError):
        return None
    names = auth.get("x509_common_name") or []
    return names[0].decode("utf-8", "replace") if names else None
