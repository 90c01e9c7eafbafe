"""The one table from domain errors to gRPC status codes, and the structured error both sides exchange.

A known domain error becomes a status with an ``ErrorDetail`` (serialised into the trailing
metadata key :data:`ERROR_METADATA_KEY`); anything else is a bug and surfaces as ``INTERNAL`` (the
details stay in the server's log, not on the wire). Every service (site agent, key holder, witness)
uses this table, so a refused budget looks the same wherever it is refused.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

import grpc

from engine.errors import (
    BudgetExceededError,
    ConfigError,
    FedGwasError,
    HarmonisationError,
    InputError,
    PrivacyError,
    ProtocolError,
    RingOverflowError,
)

ERROR_METADATA_KEY = "fedgwas-error-bin"

#: Domain error -> gRPC status. Order matters: subclasses before their bases.
STATUS_FOR_ERROR: tuple[tuple[type[FedGwasError], grpc.StatusCode], ...] = (
    (ProtocolError, grpc.StatusCode.INVALID_ARGUMENT),
    (ConfigError, grpc.StatusCode.FAILED_PRECONDITION),
    (InputError, grpc.StatusCode.INVALID_ARGUMENT),
    (HarmonisationError, grpc.StatusCode.INVALID_ARGUMENT),
    (BudgetExceededError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (PrivacyError, grpc.StatusCode.PERMISSION_DENIED),
    (RingOverflowError, grpc.StatusCode.OUT_OF_RANGE),
)


class ErrorDetailMessage(Protocol):
    """The ``ErrorDetail`` message of a service's .proto (each service declares its own)."""

    kind: str
    message: str

    def SerializeToString(self) -> bytes: ...

    def ParseFromString(self, data: bytes) -> int: ...


Detail = TypeVar("Detail", bound=ErrorDetailMessage)


def status_for(error: FedGwasError) -> grpc.StatusCode | None:
    """The status of a known domain error; ``None`` for one the table does not map (a bug)."""
    return next((status for kind, status in STATUS_FOR_ERROR if isinstance(error, kind)), None)


def abort_with(context: grpc.ServicerContext, error: FedGwasError, detail: ErrorDetailMessage) -> None:
    """End the call with ``error``'s status and ``detail`` in the trailing metadata.

    An unmapped domain error is re-raised, so gRPC reports ``INTERNAL``: a bug must look like a bug.
    """
    code = status_for(error)
    if code is None:
        raise error
    context.set_trailing_metadata(((ERROR_METADATA_KEY, detail.SerializeToString()),))
    context.abort(code, str(error))


def error_detail(error: grpc.RpcError, detail_type: type[Detail]) -> Detail | None:
    """The structured error a server attached to a failed call, if any."""
    trailing = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    for key, value in trailing or ():
        if key == ERROR_METADATA_KEY:
            detail = detail_type()
            detail.ParseFromString(value)
            return detail
    return None
