"""What both sides record about a release, so that a site's ledger and a coordinator's log can be matched.

Every task carries a request id (``TaskHeader.parameters["audit.request_id"]``, one per round, the
same at every site of the round). A release is identified by the SHA-256 of the result blocks that
left the site, exactly as sent (block number, position, shape, encoding and the protected bytes):
the site computes it as it sends, the coordinator as it receives, and an auditor compares the two.
"""

from __future__ import annotations

import hashlib
import struct

from engine.tasks import ResultBlock

#: TaskHeader.parameters key of the coordinator's id for one round (a UUID, hex).
REQUEST_ID_KEY = "audit.request_id"


class ReleaseDigest:
    """Running SHA-256 over the result blocks of one task, in the order they were sent."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256(b"fedgwas-release-v1\n")
        self.n_blocks = 0
        self.n_bytes = 0

    def update(self, block: ResultBlock) -> None:
        encoding = block.encoding.encode()
        self._hash.update(struct.pack("<IQIIH", block.block, block.first_variant, block.n_variants, block.width,
                                      len(encoding)))
        self._hash.update(encoding)
        self._hash.update(struct.pack("<Q", len(block.payload)))
        self._hash.update(block.payload)
        self.n_blocks += 1
        self.n_bytes += len(block.payload)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()
