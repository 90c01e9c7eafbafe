"""The witness's memory: every head it co-signed, per site, append-only, in ``DIR/heads.jsonl``.

Rules for a new head of a site (after its signature verifies):

* the site's first head pins its key; a later head signed by another key is refused;
* a head with a lower sequence number than the last one held is refused (a rollback);
* a head with the same sequence number and another hash is refused (a fork); the very same head
  again gets the co-signature it already has (idempotent);
* a head with a higher sequence number, or the same ``(seq, hash)`` signed again later, is co-signed
  and appended.

The witness cannot see inside a ledger, so it cannot check that a higher head *extends* the last one;
it keeps every head so that an auditor can check the ledger against all of them. Its own Ed25519
key is ``DIR/witness.key`` (0600, created once, never overwritten; ``DIR/witness.key.pub``).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

from engine.audit.heads import Cosignature, SignedHead, cosign, create_signing_key, load_signing_key, \
    public_key_bytes
from engine.errors import ConfigError, HeadError

log = logging.getLogger("witness")

HEADS_FILE, KEY_FILE = "heads.jsonl", "witness.key"


class WitnessStore:
    """Thread-safe store of co-signed heads; :meth:`submit` applies the rules above."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        create_signing_key(self.directory / KEY_FILE)
        self._key = load_signing_key(self.directory / KEY_FILE)
        self.public_key = public_key_bytes(self._key)
        self._path = self.directory / HEADS_FILE
        self._lock = threading.Lock()
        self._heads: dict[str, list[tuple[SignedHead, Cosignature]]] = {}
        self._load()

    def _load(self) -> None:
        if not self._path.exists():
            return
        for number, line in enumerate(self._path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{str(self._path)!r} line {number}"
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                raise ConfigError(f"{where} is not JSON") from None
            head, cosignature = SignedHead.from_dict(value.get("head"), where), \
                Cosignature.from_dict(value.get("cosignature"), where)
            try:
                cosignature.verify(head.verify())
            except HeadError as error:
                raise ConfigError(f"{where}: {error}") from None
            if cosignature.witness_key != self.public_key:
                raise ConfigError(f"{where} was co-signed by another witness key than {KEY_FILE}")
            self._heads.setdefault(head.site, []).append((head, cosignature))

    def heads(self, site: str) -> list[tuple[SignedHead, Cosignature]]:
        with self._lock:
            return list(self._heads.get(site, []))

    def sites(self) -> list[str]:
        with self._lock:
            return sorted(self._heads)

    def submit(self, head: SignedHead) -> Cosignature:
        """Co-sign and keep ``head``; raises :class:`HeadError` saying why it is refused."""
        head.verify()
        with self._lock:
            held = self._heads.get(head.site, [])
            if held:
                last, last_cosignature = held[-1]
                if head.public_key != last.public_key:
                    raise HeadError(f"site {head.site!r}: head at seq {head.seq} is signed by an unknown key "
                                    f"{head.key_id}; the witness holds the site's heads under key {last.key_id}")
                if head.seq < last.seq:
                    raise HeadError(f"site {head.site!r}: rolled back from seq {last.seq} to {head.seq}: the witness "
                                    f"holds a head at seq {last.seq} signed at {last.time}")
                if head.seq == last.seq and head.hash != last.hash:
                    raise HeadError(f"site {head.site!r}: conflicting heads at seq {head.seq}: hash "
                                    f"{head.hash[:16]}... but the witness holds {last.hash[:16]}... (the "
                                    f"ledger was rewritten)")
                if head == last:
                    return last_cosignature
            cosignature = cosign(self._key, head)
            line = json.dumps({"head": head.to_dict(), "cosignature": cosignature.to_dict()}, sort_keys=True)
            with open(self._path, "a", encoding="utf-8") as handle:
                handle.write(line + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            self._heads.setdefault(head.site, []).append((head, cosignature))
        log.info("co-signed site %s head seq %d", head.site, head.seq)
        return cosignature
