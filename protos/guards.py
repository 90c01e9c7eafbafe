"""Guards of a gRPC server's calls (site agent, key holder): who may hold a thread, and for how long.

A sync gRPC server gives every call one thread for its whole life. Without guards a caller that
opens streams and then stalls (sends no header, trickles chunks, stops reading replies) holds those
threads, and the next caller, however authorised, waits behind it. With the numbers of
:class:`~protos.limits.ServerLimits`, the servers therefore

- run ``max_concurrent_rpcs`` threads and tell gRPC the same ``maximum_concurrent_rpcs``
  (:func:`protos.servers.make_grpc_server`), so a call beyond it is answered ``RESOURCE_EXHAUSTED``
  at once instead of queueing behind stalled ones;
- admit each call through an :class:`AdmissionGate`: at most ``per_peer_rpcs`` calls per peer
  identity, and callers whose identity no rule could ever authorise share ``untrusted_rpcs`` slots,
  so neither one certificate nor the whole set of unknown ones can fill the server;
- cut a stalled call (:class:`Watchdog`, ``context.cancel()``): no first message within
  ``header_seconds``, blocked on the peer (waiting for its next message, or for it to accept a
  reply) longer than ``idle_seconds``, or a payload not complete ``upload_seconds`` after its header
  (a trickle of chunks, each just in time, cannot hold a thread for hours);
- bound what they buffer: a stream's payload may not exceed what its header declared, nor
  ``max_payload_bytes`` in all; :class:`ServerMeter` counts what was buffered (tests assert on it).

Nothing here knows what a site or a key holder authorises: the roles decide who is trusted and when
to read the payload (after authorising the header), this module only enforces the bounds.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Iterator, TypeVar

import grpc

from protos.limits import ServerLimits

T = TypeVar("T")


def peer_key(identity: str | None, context: grpc.ServicerContext) -> str:
    """What a per-peer limit counts: the certificate identity, else (no TLS) the peer's address."""
    return f"cn:{identity}" if identity is not None else f"addr:{context.peer()}"


class AdmissionGate:
    """Counts the calls in progress per peer and for untrusted peers; refuses (False) beyond the limits."""

    def __init__(self, limits: ServerLimits, meter: "ServerMeter") -> None:
        self.limits = limits
        self.meter = meter
        self._lock = threading.Lock()
        self._per_peer: dict[str, int] = {}
        self._untrusted = 0

    @contextmanager
    def admit(self, peer: str, trusted: bool) -> Iterator[bool]:
        """Yields True while the call holds a slot, False if it got none (then answer RESOURCE_EXHAUSTED)."""
        with self._lock:
            admitted = self._per_peer.get(peer, 0) < self.limits.per_peer_rpcs and (
                trusted or self._untrusted < self.limits.untrusted_rpcs)
            if admitted:
                self._per_peer[peer] = self._per_peer.get(peer, 0) + 1
                self._untrusted += 0 if trusted else 1
        if not admitted:
            self.meter.add(busy=1)
        try:
            yield admitted
        finally:
            if admitted:
                with self._lock:
                    self._per_peer[peer] -= 1
                    if not self._per_peer[peer]:
                        del self._per_peer[peer]
                    self._untrusted -= 0 if trusted else 1


class CallCut(Exception):
    """The call ended while the server waited on its peer: cut as stalled, or cancelled by the peer."""


class Watch:
    """One call's stall timer: :meth:`arm` before waiting on the peer, :meth:`disarm` after."""

    def __init__(self, watchdog: "Watchdog", context: grpc.ServicerContext) -> None:
        self._watchdog, self.context = watchdog, context
        self.deadline: float | None = None
        self.cut = False

    def arm(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self._watchdog._ensure_running()

    def disarm(self) -> None:
        self.deadline = None

    def receive(self, iterator: Iterator[T], seconds: float) -> T | None:
        """The peer's next message (None at the end of its stream), cutting the call after ``seconds``.

        Raises :class:`CallCut` if the call was cut or cancelled meanwhile (gRPC may then end the
        request stream as if the peer had finished it, so the end alone proves nothing).
        """
        self.arm(seconds)
        try:
            message = next(iterator, None)
        except grpc.RpcError:
            raise CallCut() from None
        finally:
            self.disarm()
        if self.cut or (message is None and not self.context.is_active()):
            raise CallCut()
        return message

    def messages(self, iterator: Iterator[T], seconds: float, total_seconds: float | None = None) -> Iterator[T]:
        """Every remaining message of the peer, each one due within ``seconds`` of the previous, all of
        them within ``total_seconds`` (None: no overall bound)."""
        end = None if total_seconds is None else time.monotonic() + total_seconds
        while True:
            wait = seconds if end is None else max(min(seconds, end - time.monotonic()), 0.0)
            message = self.receive(iterator, wait)
            if message is None:
                return
            yield message

    def replies(self, replies: Iterator[T], seconds: float) -> Iterator[T]:
        """Pass ``replies`` on, cutting the call if the peer takes longer than ``seconds`` to accept one."""
        for reply in replies:
            self.arm(seconds)
            yield reply
            self.disarm()


class Watchdog:
    """One thread per server that cancels every call whose armed :class:`Watch` has expired."""

    def __init__(self, meter: "ServerMeter", period: float = 0.1) -> None:
        self.meter = meter
        self._period = period
        self._watches: set[Watch] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @contextmanager
    def watch(self, context: grpc.ServicerContext) -> Iterator[Watch]:
        watch = Watch(self, context)
        with self._lock:
            self._watches.add(watch)
        try:
            yield watch
        finally:
            with self._lock:
                self._watches.discard(watch)

    def _ensure_running(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="rpc-watchdog", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(self._period)
            now = time.monotonic()
            with self._lock:
                if not self._watches:  # nothing to watch: stop (the next armed watch starts a new thread)
                    self._thread = None
                    return
                expired = [w for w in self._watches if w.deadline is not None and w.deadline < now and not w.cut]
                for watch in expired:
                    watch.cut = True
            self.meter.add(cut=len(expired))
            for watch in expired:
                watch.context.cancel()


class ServerMeter:
    """What a server's limits did, in total (thread-safe): payload bytes accepted into buffers, calls
    refused for want of a slot (``busy``), calls cut by the watchdog (``cut``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.buffered_bytes = 0
        self.busy = 0
        self.cut = 0

    def add(self, n_bytes: int = 0, *, busy: int = 0, cut: int = 0) -> None:
        with self._lock:
            self.buffered_bytes += n_bytes
            self.busy += busy
            self.cut += cut


class CallGuards:
    """One server's guards together: its limits, admission gate, watchdog and meter.

    A servicer wraps each call in :meth:`call`, which admits it (or ends it ``RESOURCE_EXHAUSTED``)
    and yields the call's :class:`Watch` for reading the peer's messages and sending replies.
    """

    def __init__(self, limits: ServerLimits, meter: ServerMeter | None = None) -> None:
        self.limits = limits
        self.meter = meter if meter is not None else ServerMeter()
        self.gate = AdmissionGate(limits, self.meter)
        self.watchdog = Watchdog(self.meter)

    @contextmanager
    def call(self, context: grpc.ServicerContext, identity: str | None, trusted: bool,
             busy_message: str) -> Iterator[Watch]:
        with self.gate.admit(peer_key(identity, context), trusted) as admitted, self.watchdog.watch(context) as watch:
            if not admitted:
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, busy_message)
            yield watch
