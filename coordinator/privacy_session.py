"""The coordinator's side of a study's privacy mode: material for the tasks, aggregators per round.

``secagg`` and ``plaintext`` need nothing beyond per-block aggregators. For ``he`` a session connects
to the key holder, fetches its public context (checked like the sites check it: no secret key,
128-bit security, the protocol's parameters), sends it to the sites inside every task (as privacy
material, beside the analysis inputs), registers each round with the key holder before dispatching
it, and gives each block an aggregator that sums ciphertexts and asks the key holder for the total.
The coordinator holds public contexts only: :class:`engine.privacy.he.PublicContext` refuses a secret key,
and nothing here reads the key holder's key files.
"""

from __future__ import annotations

import logging
import weakref
from typing import TYPE_CHECKING, Mapping

from coordinator.study import StudyConfig
from engine.privacy import he_encoding
from engine.privacy.protection import Aggregator, make_aggregator
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
        """One aggregator per block of ``task``'s round; for ``he`` the round is registered first."""
        sizes = [(stop - start) * width for start, stop in (task.block_bounds(b) for b in range(task.n_blocks))]
        names = [name for name, _ in task.participants]
        decryptor = None
        if self._client is not None and self.he_context is not None:
            from engine.privacy.he_rounds import RoundRegistration
            from coordinator.key_holder_client import RoundDecryptor

            self._client.register_round(RoundRegistration(
                study_id=task.study_id, round=task.round, participants=tuple(names), block_values=tuple(sizes),
                encoding=he_encoding.ENCODING, context_sha256=self.he_context.fingerprint, requester=self.requester))
            decryptor = RoundDecryptor(self._client, task.study_id, task.round)
        return {block: make_aggregator(task.privacy, len(names), size, block=block, he_context=self.he_context,
                                       decryptor=decryptor)
                for block, size in enumerate(sizes)}
