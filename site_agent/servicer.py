"""The gRPC servicer: decode, call a handler, encode; map known domain errors with one table.

A known domain error becomes a status with an :class:`ErrorDetail` in the trailing metadata. Anything
else is a bug and surfaces as ``INTERNAL`` (the details stay in the site's log, not on the wire).
"""

from __future__ import annotations

import logging
from typing import Iterator

import grpc

from engine.errors import FedGwasError
from protos import site_agent_pb2 as pb
from protos import site_agent_pb2_grpc as pb_grpc
from engine.tasks import TaskSpec
from protos import serde
from protos.status import abort_with
from site_agent import handlers
from site_agent.data import SiteData
from protos.tls import peer_identity

log = logging.getLogger("site_agent")

def _abort(context: grpc.ServicerContext, site: str, error: FedGwasError) -> None:
    abort_with(context, error, pb.ErrorDetail(kind=type(error).__name__, message=str(error), site=site))


def requester_identity(context: grpc.ServicerContext, task: TaskSpec | None = None) -> str | None:
    """Who is asking, for authorisation, budgets and the ledger.

    Over mutual TLS it is the subject CN of the peer's certificate (``context.auth_context()``),
    whatever the task header claims. Only at a site configured ``[tls] insecure = true`` (development)
    is it what the header claims (``TaskHeader.requester``), and unknown (``None``) for Describe.
    """
    authenticated = peer_identity(context)
    if authenticated is not None:
        return authenticated
    return None if task is None else task.requester


class SiteAgentServicer(pb_grpc.SiteAgentServicer):
    def __init__(self, data: SiteData) -> None:
        self.data = data

    def Describe(self, request: pb.DescribeRequest, context: grpc.ServicerContext) -> Iterator[pb.DescribeResponse]:
        try:
            cohort = serde.cohort_from_proto(request.cohort)
            requester = requester_identity(context)
            handlers.authorise_describe(self.data, request.study_id, requester)
            description = handlers.describe(self.data, cohort, request.study_id, requester)
        except FedGwasError as error:
            _abort(context, self.data.name, error)
            return
        log.info("describe for study %s: %d samples analysed", request.study_id, description.n_samples_analysed)
        yield serde.description_to_proto(description)
        yield from serde.manifest_to_protos(self.data.genotypes.manifest, request.manifest_chunk_variants)

    def RunTask(self, request_iterator: Iterator[pb.TaskMessage],
                context: grpc.ServicerContext) -> Iterator[pb.TaskEvent]:
        try:
            task = serde.task_from_messages(request_iterator)
            log.info("task %s round %d: %s, privacy %s, %d variants, %d participants", task.study_id,
                     task.round, task.analysis, task.privacy, task.n_variants, len(task.participants))
            for event in handlers.run_task(self.data, task, context.is_active, requester_identity(context, task)):
                yield from serde.event_to_protos(event)
        except FedGwasError as error:
            log.warning("task refused or failed: %s", error)
            _abort(context, self.data.name, error)
