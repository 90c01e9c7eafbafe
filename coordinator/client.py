"""A coordinator's connection to one site agent: deadlines on every call, errors made readable.

Every failure becomes a :class:`SiteFailure` naming the site: ``transient`` for unreachable sites and
expired deadlines (worth a retry or a restarted round), not transient for refusals and bad requests.
"""

from __future__ import annotations

import logging
import queue
import time
from dataclasses import dataclass
from typing import Iterator, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from engine.errors import ProtocolError, SiteFailure
from engine.cohort.harmonise import VariantManifest
from engine.tasks import CohortRequest, ResultBlock, SiteDescription, TaskDone, TaskProgress, TaskSpec
from protos import serde
from protos import site_agent_pb2 as pb
from protos import site_agent_pb2_grpc as pb_grpc
from protos.pki import TlsFiles
from protos.limits import MESSAGE_OPTIONS
from protos.status import error_detail
from protos.tls import channel

log = logging.getLogger("coordinator")

TRANSIENT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}


@dataclass(frozen=True)
class SiteEndpoint:
    name: str
    address: str


class SiteClient:
    """gRPC client for one site. ``timeout`` bounds each whole call (deadline), in seconds.

    ``connect_timeout`` bounds the whole wait for a site to answer its health check (all retries
    included); it never exceeds ``timeout``, so a study with a short deadline fails fast on a site
    that is down.

    ``tls`` is the coordinator's certificate, key and consortium CA: the channel is mutual TLS and the
    site's certificate must name ``endpoint.name``. None (explicitly insecure studies only) is plaintext.
    """

    def __init__(self, endpoint: SiteEndpoint, timeout: float = 3600.0, connect_timeout: float = 30.0,
                 tls: TlsFiles | None = None) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.connect_timeout = min(connect_timeout, timeout)
        self._channel = channel(endpoint.address, tls, endpoint.name, options=list(MESSAGE_OPTIONS))
        self._stub = pb_grpc.SiteAgentStub(self._channel)
        self.bytes_received = 0

    @property
    def name(self) -> str:
        return self.endpoint.name

    def close(self) -> None:
        self._channel.close()

    def _failure(self, error: grpc.RpcError, what: str) -> SiteFailure:
        detail = error_detail(error, pb.ErrorDetail)
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        if detail is not None:
            # A spent privacy budget (RESOURCE_EXHAUSTED) does not come back by retrying.
            return SiteFailure(self.name, f"{what} refused: {detail.message}", kind=detail.kind,
                               transient=code in TRANSIENT and detail.kind != "BudgetExceededError", refused=True)
        if code == grpc.StatusCode.UNAVAILABLE:
            details = error.details() if hasattr(error, "details") else ""
            message = f"unreachable at {self.endpoint.address} ({what}): {details}"
        elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
            message = f"{what} did not finish before its deadline"
        else:
            message = f"{what} failed: {code.name}: {error.details() if hasattr(error, 'details') else error}"
        return SiteFailure(self.name, message, kind=code.name, transient=code in TRANSIENT)

    def wait_healthy(self, attempts: int = 5, backoff: float = 0.5) -> None:
        """Health-check the site, retrying with exponential backoff on transient failures.

        All attempts together take at most ``connect_timeout`` seconds.
        """
        stub = health_pb2_grpc.HealthStub(self._channel)
        deadline = time.monotonic() + self.connect_timeout
        delay = backoff
        for attempt in range(1, attempts + 1):
            remaining = deadline - time.monotonic()
            try:
                response = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=max(remaining, 0.001),
                                      wait_for_ready=attempt > 1)
            except grpc.RpcError as error:
                failure = self._failure(error, "health check")
                if not failure.transient:
                    raise failure from None
                if attempt == attempts or time.monotonic() + delay >= deadline:
                    raise SiteFailure(self.name, f"unreachable at {self.endpoint.address} (no health-check answer "
                                                 f"within {self.connect_timeout:g} s, {attempt} attempt(s))",
                                      kind=failure.kind, transient=True) from None
                log.info("site %s not ready (attempt %d): retrying in %.1f s", self.name, attempt, delay)
                time.sleep(delay)
                delay *= 2
                continue
            if response.status != health_pb2.HealthCheckResponse.SERVING:
                raise SiteFailure(self.name, f"reports status {response.status} instead of SERVING")
            return

    def describe(self, study_id: str, cohort: CohortRequest) -> tuple[SiteDescription, VariantManifest]:
        request = pb.DescribeRequest(study_id=study_id, cohort=serde.cohort_to_proto(cohort))
        try:
            responses = self._stub.Describe(request, timeout=self.connect_timeout * 4)
            description, manifest = serde.description_from_responses(responses)
        except grpc.RpcError as error:
            raise self._failure(error, "describe") from None
        except ProtocolError as error:
            raise SiteFailure(self.name, f"sent a malformed description: {error}", kind="ProtocolError") from None
        return description, manifest

    def open_task(self, task: TaskSpec, timeout: float | None = None) -> "TaskCall":
        """Start ``task`` as a two-way stream: the round's later phases are sent with :meth:`TaskCall.send`.
        ``timeout`` (default: the client's) is the deadline of the whole round at this site."""
        return TaskCall(self, task, self.timeout if timeout is None else timeout)

    def compare_cohorts(self, study_id: str, phase: str, peer: str, peer_key: tuple[bytes, bytes],
                        cohort: CohortRequest, first: Sequence[bytes] = (), second: Sequence[bytes] = (),
                        requester: str = "", drop_shared: bool = False) -> tuple[list[bytes], list[bytes], int]:
        """One phase of the private overlap count with ``peer`` (:mod:`engine.overlap`); ``drop_shared``:
        the one-sided exchange in which the counting site leaves the shared participants out."""
        request = pb.OverlapRequest(study_id=study_id, phase=phase, peer=peer, peer_public_key=peer_key[0],
                                    peer_key_signature=peer_key[1],
                                    cohort=serde.cohort_to_proto(cohort), first=list(first), second=list(second),
                                    requester=requester, drop_shared=drop_shared)
        try:
            response = self._stub.CompareCohorts(request, timeout=self.timeout)
        except grpc.RpcError as error:
            raise self._failure(error, f"overlap ({phase})") from None
        return list(response.first), list(response.second), int(response.count)

    def run_task(self, task: TaskSpec) -> Iterator[TaskProgress | ResultBlock | TaskDone]:
        """Send ``task`` (one that needs no later phase: plaintext, or a budget check) and yield the
        site's events; the call is cancelled if the caller stops early."""
        call = self._stub.RunTask(serde.task_to_messages(task), timeout=self.timeout)
        try:
            for event in serde.events_from_protos(call):
                if isinstance(event, ResultBlock):
                    self.bytes_received += len(event.payload)
                yield event
        except grpc.RpcError as error:
            raise self._failure(error, f"task round {task.round}") from None
        except ProtocolError as error:
            raise SiteFailure(self.name, f"sent a malformed result stream: {error}", kind="ProtocolError") from None
        finally:
            call.cancel()


class TaskCall:
    """One site's RunTask stream of a round: the task is sent first, then whatever :meth:`send` queues.

    :meth:`events` yields the site's events (errors become :class:`SiteFailure`); :meth:`close` ends
    the stream and cancels the call.
    """

    def __init__(self, client: SiteClient, task: TaskSpec, timeout: float) -> None:
        self.client = client
        self.task = task
        self._queue: queue.Queue[pb.TaskMessage | None] = queue.Queue()
        self._call = client._stub.RunTask(self._requests(), timeout=timeout)

    def _requests(self) -> Iterator[pb.TaskMessage]:
        yield from serde.task_to_messages(self.task)
        while True:
            message = self._queue.get()
            if message is None:
                return
            yield message

    def send(self, message: pb.TaskMessage) -> None:
        self._queue.put(message)

    def events(self) -> Iterator[object]:
        try:
            for event in serde.events_from_protos(self._call):
                if isinstance(event, ResultBlock):
                    self.client.bytes_received += len(event.payload)
                yield event
        except grpc.RpcError as error:
            raise self.client._failure(error, f"task round {self.task.round}") from None
        except ProtocolError as error:
            raise SiteFailure(self.client.name, f"sent a malformed result stream: {error}", kind="ProtocolError") from None

    def close(self) -> None:
        self._queue.put(None)
        self._call.cancel()
