"""The gRPC servicer: decode, call a handler, encode; map known domain errors with one table.

A known domain error becomes a status with an :class:`ErrorDetail` in the trailing metadata. Anything
else is a bug and surfaces as ``INTERNAL`` (the details stay in the site's log, not on the wire).

Every call first takes a slot of the server's :class:`~protos.guards.AdmissionGate` (a small pool for
certificates that no ``[access]`` rule lists); a task stream is authorised on its header before its
arrays are read (:mod:`site_agent.admission`), its arrays are capped by their declared sizes and the
server's maximum, and a call that keeps the site waiting (no header, a stalled upload, a reader that
stops reading) is cut by the server's watchdog. Computations run under ``work_slots``.
"""

from __future__ import annotations

import logging
import threading
from itertools import chain
from typing import ContextManager, Iterator

import grpc

from engine.errors import FedGwasError
from protos import site_agent_pb2 as pb
from protos import site_agent_pb2_grpc as pb_grpc
from engine.tasks import TaskSpec
from protos import serde
from protos.guards import CallCut, CallGuards, ServerMeter, Watch
from protos.limits import ServerLimits
from protos.status import abort_with
from site_agent import admission, handlers
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
    def __init__(self, data: SiteData, limits: ServerLimits = ServerLimits(), meter: ServerMeter | None = None) -> None:
        self.data = data
        self.limits = limits
        self.guards = CallGuards(limits, meter)
        self.meter = self.guards.meter
        self._work = threading.BoundedSemaphore(limits.work_slots)

    def _guarded(self, context: grpc.ServicerContext, identity: str | None) -> ContextManager[Watch]:
        """The call's admission (a small pool for identities no ``[access]`` rule lists) and its watch."""
        return self.guards.call(context, identity, admission.may_ever_be_served(self.data.config.access, identity),
                                f"site {self.data.name!r} is busy: too many calls in progress from this caller")

    def Describe(self, request: pb.DescribeRequest, context: grpc.ServicerContext) -> Iterator[pb.DescribeResponse]:
        with self._guarded(context, peer_identity(context)) as watch:
            try:
                cohort = serde.cohort_from_proto(request.cohort)
                requester = requester_identity(context)
                description = handlers.describe_recorded(self.data, cohort, request.study_id, requester)
            except FedGwasError as error:
                _abort(context, self.data.name, error)
                return
            log.info("describe for study %s: %d samples analysed", request.study_id, description.n_samples_analysed)
            replies = chain([serde.description_to_proto(description)],
                            serde.manifest_to_protos(self.data.genotypes.manifest, request.manifest_chunk_variants))
            yield from watch.replies(replies, self.limits.idle_seconds)

    def CompareCohorts(self, request: pb.OverlapRequest, context: grpc.ServicerContext) -> pb.OverlapResponse:
        with self._guarded(context, peer_identity(context)):
            try:
                requester = requester_identity(context)
                if requester is None and request.requester:  # insecure development transport only
                    requester = request.requester
                first, second, count = handlers.compare_cohorts(
                    self.data, request.study_id, request.phase, request.peer, bytes(request.peer_public_key),
                    bytes(request.peer_key_signature), serde.cohort_from_proto(request.cohort), list(request.first), list(request.second), requester,
                    drop_shared=request.drop_shared)
            except FedGwasError as error:
                _abort(context, self.data.name, error)
                raise AssertionError("unreachable: abort raises")  # pragma: no cover
            return pb.OverlapResponse(first=first, second=second, count=count)

    def RunTask(self, request_iterator: Iterator[pb.TaskMessage],
                context: grpc.ServicerContext) -> Iterator[pb.TaskEvent]:
        identity = peer_identity(context)
        with self._guarded(context, identity) as watch:
            try:
                header = serde.task_header(watch.receive(request_iterator, self.limits.header_seconds))
                requester = identity if identity is not None else header.requester
                admission.authorise_header(self.data, header, requester)
                task = serde.task_from_messages(watch.messages(request_iterator, self.limits.idle_seconds,
                                                               self.limits.upload_seconds),
                                                header=header, max_bytes=self.limits.max_payload_bytes,
                                                on_bytes=self.meter.add)
                # The round's later phases wait on the coordinator's relays, which come once every site
                # has computed: a wait bounded by the round, not by the upload's idle deadline.
                inbox = serde.StreamInbox(watch.messages(request_iterator, self.limits.round_phase_seconds))
                log.info("task %s round %d: %s, privacy %s, %d variants, %d participants", task.study_id,
                         task.round, task.analysis, task.privacy, task.n_variants, len(task.participants))
                with self._work:
                    for event in handlers.run_task(self.data, task, inbox, context.is_active, requester):
                        yield from watch.replies(serde.event_to_protos(event), self.limits.idle_seconds)
            except CallCut:
                log.warning("a task stream from %s was cut: it stalled or was cancelled", identity or "a peer")
            except FedGwasError as error:
                log.warning("task refused or failed: %s", error)
                _abort(context, self.data.name, error)
