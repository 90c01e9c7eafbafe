"""The coordinator's side of a study's privacy mode: material for the tasks, sums per round.

``plaintext`` needs nothing beyond per-block aggregators; ``secagg`` keeps every site's masked blocks
until the survivors' sum can be unmasked. For ``he`` a session connects to the key holder, fetches its
public context (checked like the sites check it: no secret key, 128-bit security, the protocol's
parameters) and sends it to the sites inside every task (as privacy material, beside the analysis
inputs); a round keeps every site's ciphertexts, and once the survivors are known and their reveals
give the tag offsets, the session registers the round over the survivors with the key holder and
asks it for each block's total. The coordinator holds public contexts only:
:class:`engine.privacy.he.PublicContext` refuses a secret key, and nothing here reads the key
holder's key files.
"""

from __future__ import annotations

import logging
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Mapping

import numpy as np

from coordinator.study import StudyConfig
from engine.privacy import he_encoding
from engine.privacy.protection import Aggregator, EncryptedRoundSum, MaskedRoundSum, make_aggregator
from engine.privacy.secagg import Unmasker
from engine.tasks import TaskSpec

if TYPE_CHECKING:
    from coordinator.key_holder_client import KeyHolderClient
    from engine.privacy.he import PublicContext

log = logging.getLogger("coordinator")


class PrivacySession:
    """Per-study privacy state of the coordinator (see the module docstring)."""

    def __init__(self, config: StudyConfig) -> None:
        self.privacy = config.privacy
        self.requester = config.requester
        self.he_context: PublicContext | None = None
        self._client: KeyHolderClient | None = None
        if config.privacy == "he":
            from coordinator.key_holder_client import KeyHolderClient  # pulls in engine.privacy.he (tenseal)
            from engine.privacy.he import PublicContext

            client = KeyHolderClient(config.key_holder, timeout=config.timeout_seconds, tls=config.tls,
                                     server_name=config.key_holder_name)
            weakref.finalize(self, client.close)
            self._client = client
            client.wait_healthy()
            self.he_context = PublicContext(client.public_context())
            log.info("key holder at %s: CKKS context %s", config.key_holder, self.he_context.fingerprint[:16])

    def task_material(self) -> Mapping[str, bytes]:
        """Privacy material every task of the study carries (``he``: the public context)."""
        return {} if self.he_context is None else {"he_context": self.he_context.data}

    def aggregators(self, task: TaskSpec, width: int) -> dict[int, Aggregator]:
        """One aggregator per block of a plaintext round of ``task``."""
        return {block: make_aggregator(task.privacy, len(task.participants), size)
                for block, size in enumerate(_block_sizes(task, width))}

    def round_sum(self, task: TaskSpec, width: int) -> MaskedRoundSum | EncryptedRoundSum:
        """What keeps every site's blocks of a secure round of ``task`` apart until the survivors are known."""
        sizes = _block_sizes(task, width)
        if task.privacy == "he":
            return EncryptedRoundSum(len(task.participants), sizes, context=self.he_context)
        return MaskedRoundSum(len(task.participants), sizes)

    def survivor_totals(self, sums: MaskedRoundSum | EncryptedRoundSum, task: TaskSpec, survivors: tuple[str, ...],
                        unmasker: Unmasker, pool: ThreadPoolExecutor) -> list[np.ndarray]:
        """float64 totals per block over ``survivors`` (secagg: unmasked here; he: released by the key holder).

        Under he the round is registered now, over the survivors, and each block's sum goes to the key
        holder with the tag offsets ``unmasker`` gives (blocks in parallel on ``pool``).
        """
        if isinstance(sums, MaskedRoundSum):
            return sums.totals(survivors, unmasker)
        assert self._client is not None and self.he_context is not None
        from engine.privacy.he_rounds import RoundRegistration
        from coordinator.key_holder_client import RoundDecryptor

        registration_id = self._client.register_round(RoundRegistration(
            study_id=task.study_id, round=task.round, participants=survivors, block_values=sums.sizes,
            encoding=he_encoding.ENCODING, context_sha256=self.he_context.fingerprint, requester=self.requester))
        decryptor = RoundDecryptor(self._client, task.study_id, task.round, registration_id)

        def decrypt(block: int) -> np.ndarray:
            return decryptor.decrypt(block, sums.sizes[block], sums.aggregate(survivors, block),
                                     sums.tag_offsets(unmasker, block))

        return [future.result() for future in [pool.submit(decrypt, b) for b in range(len(sums.sizes))]]


def _block_sizes(task: TaskSpec, width: int) -> tuple[int, ...]:
    return tuple((stop - start) * width for start, stop in (task.block_bounds(b) for b in range(task.n_blocks)))
