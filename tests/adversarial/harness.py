"""A coordinator that speaks the real RunTask protocol to real site agents, honestly or not.

It can play roster members itself (sites colluding with it, whose identity keys it holds), invent
participants (sybils), change what each site is shown, drop sites, forge survivor sets and re-send
requests: every attack of docs/threat-model.md goes through :meth:`Coordinator.run`, and the tests
assert what the real sites refused, what their ledgers recorded and that nothing could be unmasked.
Under ``--privacy he`` it keeps the sites' ciphertexts; the tests then ask a real key holder.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from coordinator.client import SiteClient, SiteEndpoint, TaskCall
from engine.privacy import ring
from engine.errors import FedGwasError, SiteFailure
from engine.privacy import roster as roster_module
from engine.privacy.roster import Roster, RosterEntry
from engine.privacy.secagg import Unmasker
from engine.privacy.secure_round import (KeyAdvertisement, ShareReveal, SiteRound, SurvivorSignature, recover,
                                         round_context, survivors_message, task_digest)
from engine.tasks import ResultBlock, TaskDone, TaskProgress, TaskSpec
from protos import round_messages
from protos import site_agent_pb2 as pb
from site_agent.provision import ensure_identity_key


def write_roster(path: Path, real: Mapping[str, Path], played: Mapping[str, Ed25519PrivateKey]) -> Roster:
    """A roster of real sites (their directories hold their identity keys) and sites the harness plays."""
    entries = [RosterEntry(name, ensure_identity_key(directory)) for name, directory in real.items()]
    entries += [RosterEntry(name, roster_module.public_bytes(key)) for name, key in played.items()]
    path.write_text(roster_module.render_roster(entries), encoding="utf-8")
    return roster_module.load_roster(path)


@dataclass
class RoundResult:
    """What the coordinator obtained: per-site errors, summaries, masked blocks and, if it could, the total."""

    errors: dict[str, SiteFailure] = field(default_factory=dict)
    done: dict[str, TaskDone] = field(default_factory=dict)
    blocks: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)  # under he: the ciphertext bytes
    reveals: dict[str, ShareReveal] = field(default_factory=dict)
    total: np.ndarray | None = None  # unmasked float64 total over the survivors (None: not reachable)
    chosen: tuple[str, ...] = ()  # the survivor set the coordinator unmasks over
    advertisements: dict[str, KeyAdvertisement] = field(default_factory=dict)


class Coordinator:
    """Drives secure rounds against real site agents (``clients``), playing ``played`` roster members."""

    def __init__(self, clients: Mapping[str, SiteClient], roster: Roster,
                 played: Mapping[str, Ed25519PrivateKey] | None = None) -> None:
        self.clients = dict(clients)
        self.roster = roster
        self.played = dict(played or {})

    def run(self, tasks: Mapping[str, TaskSpec], *, played_values: Mapping[str, np.ndarray] | None = None,
            advertisements: Callable[[list[KeyAdvertisement]], list[KeyAdvertisement]] = lambda ads: ads,
            drop_after_shares: Sequence[str] = (), survivors: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
            signatures: Callable[[list[SurvivorSignature]], list[SurvivorSignature]] = lambda s: s,
            width: int | None = None) -> RoundResult:
        """One round: ``tasks`` maps every participant (real or played) to the task it is shown.

        Hooks: ``advertisements`` edits the key list relayed to every real site; ``drop_after_shares``
        real sites are cut off after the share exchange; ``survivors`` overrides the survivor set sent;
        ``signatures`` edits the signatures relayed. Played sites contribute ``played_values`` (zeros).
        """
        result = RoundResult()
        he = next(iter(tasks.values())).privacy == "he"
        if he and any(n in self.played for n in tasks):
            raise NotImplementedError("the harness plays colluding sites under secagg only")
        real = [n for n in tasks if n in self.clients]
        calls: dict[str, TaskCall] = {n: self.clients[n].open_task(tasks[n]) for n in real}
        streams = {n: calls[n].events() for n in real}
        rounds = {n: SiteRound(n, self.played[n], self.roster, tasks[n].participants, tasks[n].threshold,
                               task_digest(tasks[n]), 2) for n in tasks if n in self.played}
        live = list(real)

        def expect(name: str, kind: type) -> object | None:
            try:
                for event in streams[name]:
                    if isinstance(event, TaskProgress):
                        continue
                    if isinstance(event, kind):
                        return event
                    raise AssertionError(f"{name} sent {type(event).__name__}, expected {kind.__name__}")
                raise AssertionError(f"{name} ended its stream before {kind.__name__}")
            except SiteFailure as failure:
                result.errors[name] = failure
                live.remove(name)
                return None

        try:
            for name in list(live):
                ad = expect(name, KeyAdvertisement)
                if ad is not None:
                    result.advertisements[name] = ad  # type: ignore[assignment]
            if result.errors:
                return result
            for name, played in rounds.items():
                result.advertisements[name] = played.advertisement
            honest = list(result.advertisements.values())
            ads = advertisements(honest)
            for name in live:
                calls[name].send(round_messages.peer_keys_to_proto(ads))
            for played in rounds.values():
                played.receive_keys(honest)
            outgoing = {n: r.shares() for n, r in rounds.items()}
            for name in list(live):
                shares = expect(name, list)
                if shares is not None:
                    outgoing[name] = shares  # type: ignore[assignment]
            if result.errors:
                return result
            for name in [*live, *rounds]:
                bundle = [s for shares in outgoing.values() for s in shares if s.recipient == name]
                if name in rounds:
                    rounds[name].receive_shares(bundle)
                else:
                    calls[name].send(pb.TaskMessage(share_bundle=round_messages.shares_to_proto(bundle)))
            for name in drop_after_shares:
                calls[name].close()
                live.remove(name)
            any_task = next(iter(tasks.values()))
            for name in list(live):
                blocks: dict[int, np.ndarray] = {}
                while len(blocks) < any_task.n_blocks:
                    block = expect(name, ResultBlock)
                    if block is None:
                        break
                    payload = block.payload  # type: ignore[attr-defined]
                    blocks[block.block] = payload if he else ring.from_bytes(payload)  # type: ignore[attr-defined]
                    width = block.width  # type: ignore[attr-defined]
                result.blocks[name] = blocks
            for name, played in rounds.items():
                masker = played.masker()
                values = (played_values or {}).get(name)
                blocks = {}
                for b in range(any_task.n_blocks):
                    start, stop = any_task.block_bounds(b)
                    part = np.zeros((stop - start, width or 1)) if values is None else values[start:stop]
                    blocks[b] = masker.mask(ring.encode(part, len(tasks)), b)
                result.blocks[name] = blocks
            default = tuple(sorted([*live, *rounds]))
            sets = {n: tuple(sorted(survivors.get(n, default) if isinstance(survivors, Mapping) else
                                    (survivors if survivors is not None else default))) for n in [*live, *rounds]}
            chosen = sets[live[0]] if live else default
            for name in live:
                calls[name].send(pb.TaskMessage(survivors=pb.SurvivorSet(sites=list(sets[name]))))
            # played (colluding) sites sign whatever set the coordinator likes, as many as it likes
            collected = [SurvivorSignature(n, members, roster_module.sign(self.played[n], survivors_message(
                played.context, members))) for members in set(sets.values()) for n, played in rounds.items()
                if n in members]
            for name in list(live):
                signature = expect(name, SurvivorSignature)
                if signature is not None:
                    collected.append(signature)  # type: ignore[arg-type]
            relayed = signatures(collected)
            message = pb.TaskMessage(survivor_signatures=pb.SurvivorSignatures(
                signatures=[round_messages.survivor_signature_to_proto(s) for s in relayed]))
            for name in live:
                calls[name].send(message)
            for name, played in rounds.items():
                if name in chosen:
                    try:
                        played.sign_survivors(chosen)
                        result.reveals[name] = played.reveal(relayed)
                    except FedGwasError:
                        pass
            for name in list(live):
                reveal = expect(name, ShareReveal)
                if reveal is not None:
                    result.reveals[name] = reveal  # type: ignore[assignment]
                    done = expect(name, TaskDone)
                    if done is not None:
                        result.done[name] = done  # type: ignore[assignment]
            result.chosen = chosen
            result.total = None if he else self._unmask(result, chosen, any_task, len(tasks))
            return result
        finally:
            for call in calls.values():
                call.close()

    @staticmethod
    def recover(result: RoundResult, chosen: tuple[str, ...], task: TaskSpec, n: int) -> Unmasker | None:
        """What the reveals let the coordinator remove from the sum over ``chosen`` (None: not enough)."""
        ads = result.advertisements
        threshold = task.threshold or n // 2 + 1
        if len({a.task_digest for a in ads.values()}) != 1 or any(s not in result.blocks for s in chosen):
            return None
        try:
            return recover(round_context(next(iter(ads.values())).task_digest, list(ads.values())), ads, chosen,
                           list(result.reveals.values()), threshold)
        except FedGwasError:
            return None

    def _unmask(self, result: RoundResult, chosen: tuple[str, ...], task: TaskSpec, n: int) -> np.ndarray | None:
        unmasker = self.recover(result, chosen, task, n)
        if unmasker is None:
            return None
        totals = []
        for b in range(task.n_blocks):
            total = result.blocks[chosen[0]][b]
            for site in chosen[1:]:
                total = ring.add(total, result.blocks[site][b])
            totals.append(ring.decode(unmasker.unmask(total, b), n))
        return np.concatenate(totals)


def client_for(name: str, port: int, timeout: float = 30.0) -> SiteClient:
    return SiteClient(SiteEndpoint(name, f"127.0.0.1:{port}"), timeout=timeout)


def retask(task: TaskSpec, **changes: object) -> TaskSpec:
    return dataclasses.replace(task, **changes)
