"""The coordinator's side of one secure round (secagg or he): relay the phases, sum, unmask.

The coordinator never holds anything it could unmask on its own: it relays each site's signed
ephemeral keys and encrypted Shamir shares (engine/privacy/secure_round.py), sums the masked blocks
of the sites that delivered all of theirs (the survivors), has the survivors sign that set, and only
with at least ``t`` reveals rebuilds the survivors' self-mask seeds and the dropped sites' mask keys to
remove what is left of the masks. A site that fails after the shares were exchanged is recovered in
the same round; a failure before that ends the round with nothing computed (the caller may restart
it); fewer than ``t`` survivors end it with nothing unmasked.

Under ``he`` the round is the same: the sites' ciphertexts carry tags made of the same self and
pairwise masks, the coordinator keeps every site's ciphertexts, and after the consistency check it
registers the round over the survivors with the key holder and sends each block's sum over the
survivors with the tag offsets that the reveals give (:mod:`coordinator.privacy_session`). A site
lost mid-round is recovered in the same round under both modes.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping

import numpy as np

from engine.audit.coordinator_log import CoordinatorLog, audited_events
from coordinator.client import SiteClient, TaskCall
from coordinator.privacy_session import PrivacySession
from engine.errors import FedGwasError, PrivacyError, SiteFailure, StudyFailed
from engine.privacy.secure_round import (KeyAdvertisement, ShareReveal, SurvivorSignature, majority, recover,
                                         round_context)
from engine.privacy.protection import EncryptedRoundSum, MaskedRoundSum
from engine.tasks import ResultBlock, TaskDone, TaskProgress, TaskSpec
from protos import round_messages
from protos import site_agent_pb2 as pb

log = logging.getLogger("coordinator")


@dataclass
class RoundOutcome:
    """What a secure round produced: totals ``(n_variants, width)``, each contributor's summary, the
    sites that dropped out (recovered without them) and the bytes the key phases added."""

    totals: np.ndarray
    done: dict[str, TaskDone]
    contributors: tuple[str, ...]
    dropped: dict[str, SiteFailure] = field(default_factory=dict)
    protocol_bytes: int = 0


class _Streams:
    """Each site's event stream of the round, read phase by phase."""

    def __init__(self, calls: Mapping[str, TaskCall], tasks: Mapping[str, TaskSpec], audit: CoordinatorLog | None):
        self.calls = calls
        self._events: dict[str, Iterator[object]] = {
            name: audited_events(audit, name, tasks[name], call.events()) for name, call in calls.items()}  # type: ignore[arg-type]

    def expect(self, name: str, kind: type, what: str) -> object:
        for event in self._events[name]:
            if isinstance(event, TaskProgress):
                continue
            if isinstance(event, kind):
                return event
            raise SiteFailure(name, f"sent {type(event).__name__} while the coordinator expected {what}",
                              kind="ProtocolError")
        raise SiteFailure(name, f"ended the task stream before sending {what}", kind="ProtocolError")

    def events(self, name: str) -> Iterator[object]:
        return self._events[name]


def run_secure_round(clients: list[SiteClient], tasks: Mapping[str, TaskSpec], width: int, pool: ThreadPoolExecutor,
                     privacy: PrivacySession, audit: CoordinatorLog | None, on_block: Callable[[], None],
                     allow_dropout: bool) -> RoundOutcome:
    """One secagg or he round over ``clients`` (see the module docstring).

    Raises
    ------
    SiteFailure
        A site failed before the shares were exchanged: nothing was computed anywhere.
    StudyFailed
        Too few survivors, a refused consistency check or a failed reconstruction: nothing was unmasked.
    """
    names = [c.name for c in clients]
    first = tasks[names[0]]
    threshold = first.threshold or majority(len(names))
    # A site has the study's timeout to deliver its blocks; the round's calls live twice as long, so that
    # the survivors of a straggler cut off at that deadline still have time to unmask.
    phase_timeout = min(c.timeout for c in clients)
    calls = {c.name: c.open_task(tasks[c.name], timeout=2 * phase_timeout) for c in clients}
    streams = _Streams(calls, tasks, audit)
    sent = 0
    sums: MaskedRoundSum | EncryptedRoundSum | None = None
    try:
        ads: dict[str, KeyAdvertisement] = {}
        for name in names:
            ads[name] = streams.expect(name, KeyAdvertisement, "its signed round keys")  # type: ignore[assignment]
        message = round_messages.peer_keys_to_proto(list(ads.values()))
        for call in calls.values():
            call.send(message)
            sent += message.ByteSize()
        outgoing = {name: streams.expect(name, list, "its encrypted shares") for name in names}
        for name in names:
            bundle = [share for shares in outgoing.values() for share in shares if share.recipient == name]  # type: ignore[attr-defined]
            message = pb.TaskMessage(share_bundle=round_messages.shares_to_proto(bundle))
            calls[name].send(message)
            sent += message.ByteSize()
        sums = privacy.round_sum(first, width)
        dropped = _masked_input(names, tasks, width, pool, streams, sums, on_block, phase_timeout)
        for name in dropped:
            calls[name].close()
        survivors = tuple(sorted(n for n in names if n not in dropped))
        if dropped and not allow_dropout:
            raise StudyFailed(f"{'; '.join(str(f) for f in dropped.values())} (the study does not allow dropping "
                              f"sites; nothing was unmasked)", failures=tuple(dropped.values()))
        if len(survivors) < threshold:
            raise StudyFailed(f"only {len(survivors)} of {len(names)} sites delivered every block, below the "
                              f"threshold {threshold}: the round is abandoned and nothing was unmasked",
                              failures=tuple(dropped.values()))
        message = pb.TaskMessage(survivors=pb.SurvivorSet(sites=list(survivors)))
        signatures: dict[str, SurvivorSignature] = {}
        for name in survivors:
            calls[name].send(message)
            sent += message.ByteSize()
        for name in survivors:
            try:
                signatures[name] = streams.expect(name, SurvivorSignature, "its survivor signature")  # type: ignore[assignment]
            except SiteFailure as failure:
                dropped[name] = failure  # its masked input stays in the sum; the others reveal its seed
        message = pb.TaskMessage(survivor_signatures=pb.SurvivorSignatures(
            signatures=[round_messages.survivor_signature_to_proto(s) for s in signatures.values()]))
        for name in signatures:
            calls[name].send(message)
            sent += message.ByteSize()
        reveals: dict[str, ShareReveal] = {}
        done: dict[str, TaskDone] = {}
        for name in signatures:
            try:
                reveals[name] = streams.expect(name, ShareReveal, "its share reveal")  # type: ignore[assignment]
                done[name] = streams.expect(name, TaskDone, "its summary")  # type: ignore[assignment]
            except SiteFailure as failure:
                dropped.setdefault(name, failure)
        received = sum(round_messages.advertisement_to_proto(a).ByteSize() for a in ads.values()) + \
            sum(round_messages.shares_to_proto(s).ByteSize() for s in outgoing.values()) + \
            sum(round_messages.survivor_signature_to_proto(s).ByteSize() for s in signatures.values()) + \
            sum(round_messages.reveal_to_proto(r).ByteSize() for r in reveals.values())
        digests = {ad.task_digest for ad in ads.values()}
        try:
            if len(digests) != 1:
                raise PrivacyError("the sites signed different task digests")
            unmasker = recover(round_context(digests.pop(), list(ads.values())), ads, survivors,
                               list(reveals.values()), threshold)
        except FedGwasError as error:
            raise StudyFailed(f"round {first.round} could not be unmasked: {error}",
                              failures=tuple(dropped.values())) from None
        totals = np.concatenate([t.reshape(-1, width) for t in
                                 privacy.survivor_totals(sums, first, survivors, unmasker, pool)])
        if dropped:
            log.warning("round %d recovered without %s: result over %s", first.round, sorted(dropped),
                        ", ".join(survivors))
        return RoundOutcome(totals, done, survivors, {k: v for k, v in dropped.items() if k not in survivors},
                            sent + received)
    finally:
        for call in calls.values():
            call.close()
        if sums is not None:
            sums.close()


def _masked_input(names: list[str], tasks: Mapping[str, TaskSpec], width: int, pool: ThreadPoolExecutor,
                  streams: _Streams, sums: MaskedRoundSum | EncryptedRoundSum, on_block: Callable[[], None],
                  timeout: float) -> dict[str, SiteFailure]:
    """Collect every site's masked blocks concurrently; returns the sites that failed to deliver them all
    (within ``timeout`` seconds: a stalled site is cut off and recovered like a crashed one)."""

    def consume(name: str) -> None:
        task = tasks[name]
        if sums.delivered(name):
            return
        for event in streams.events(name):
            if isinstance(event, TaskProgress):
                continue
            if not isinstance(event, ResultBlock):
                raise SiteFailure(name, f"sent {type(event).__name__} among its result blocks", kind="ProtocolError")
            bounds = task.block_bounds(event.block) if 0 <= event.block < task.n_blocks else (-1, -1)
            if (event.first_variant, event.first_variant + event.n_variants) != bounds or event.width != width:
                raise SiteFailure(name, f"sent block {event.block} with an unexpected shape", kind="ProtocolError")
            try:  # the sites' blocks are parsed in parallel (one thread per site)
                sums.add(name, event.block, event.encoding, event.payload)
            except FedGwasError as error:
                raise SiteFailure(name, str(error), kind="ProtocolError") from None
            delivered = sums.delivered(name)
            on_block()
            if delivered:
                return
        raise SiteFailure(name, "ended the task stream before its last result block", kind="ProtocolError")

    futures = {name: pool.submit(consume, name) for name in names}
    wait(futures.values(), timeout=timeout)
    failed: dict[str, SiteFailure] = {}
    for name, future in futures.items():
        if not future.done():
            streams.calls[name].close()  # unblocks its reader
            failed[name] = SiteFailure(name, f"did not deliver its result blocks before the deadline ({timeout:g} s)",
                                       kind="DEADLINE_EXCEEDED", transient=True)
        try:
            future.result()
        except SiteFailure as failure:
            failed.setdefault(name, failure)
        if name in failed:
            log.warning("site %s dropped out of the round: %s", name, failed[name])
    return failed
