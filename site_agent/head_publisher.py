"""The site's signed ledger head: signed after every append, published, and checked at start-up.

After every ledger append (:class:`HeadPublisher`, the ledger's ``on_append`` hook) the site signs
``(site, seq, hash, time)`` with its ledger key (``[keys] ledger_signing_key``, engine/audit/heads.py),
records it as the last published head (``[audit] published_head``, kept with the key, apart from the
ledger), pushes it to the witness when one is configured (``[witness] address``), and hands it out in
every task's final message (``TaskSummary.ledger_head``), which the coordinator logs.

At start-up (:func:`open_checked_ledger`) the site refuses to serve on a ledger that does not extend
the last head it published (its own record and, when configured, the witness's latest head): a
deleted ledger is never silently recreated and a rolled-back or rewritten one is refused.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from engine.audit.heads import HeadRecord, SignedHead, extension_problem, load_signing_key, public_key_bytes, \
    sign_head
from engine.errors import ConfigError, FedGwasError
from protos.witness_client import WitnessClient
from site_agent.config import SiteConfig
from engine.audit.ledger import GENESIS, Ledger, LedgerEntry, verify

log = logging.getLogger("site_agent")

#: After a failed push, the witness is not tried again for this long (appends must not stall on it).
WITNESS_RETRY_SECONDS = 30.0


class HeadPublisher:
    """Signs, records and publishes the ledger head after each append (thread-safe; heads only move forward)."""

    def __init__(self, site: str, key: Ed25519PrivateKey, record_path: Path, witness: WitnessClient | None,
                 current: SignedHead) -> None:
        self.site = site
        self._key = key
        self.record_path = record_path
        self.witness = witness
        self._lock = threading.Lock()
        self._latest = current
        self._witness_retry_at = 0.0  # monotonic time before which a failed witness is not retried

    @property
    def latest(self) -> SignedHead:
        """The most recent signed head (after the last append)."""
        with self._lock:
            return self._latest

    def __call__(self, entry: LedgerEntry) -> None:
        self.publish(entry.seq, entry.hash)

    def publish(self, seq: int, head_hash: str) -> SignedHead:
        head = sign_head(self._key, self.site, seq, head_hash)
        with self._lock:
            if seq < self._latest.seq:  # a slower thread's older head: the newer one is published already
                return self._latest
            self._latest = head
            cosignature = None
            if self.witness is not None and time.monotonic() >= self._witness_retry_at:
                try:
                    cosignature = self.witness.submit(head)
                except FedGwasError as error:  # the site keeps serving; the auditor sees the gap
                    # Back off, so that an unreachable witness does not stall every append; the next
                    # head pushed covers the skipped ones (it extends them).
                    self._witness_retry_at = time.monotonic() + WITNESS_RETRY_SECONDS
                    log.error("ledger head seq %d was not co-signed by the witness (next attempt in %.0f s): %s",
                              seq, WITNESS_RETRY_SECONDS, error)
            HeadRecord(head, cosignature).write(self.record_path)
        return head


def _held_heads(config: SiteConfig, public_key: bytes,
                witness: WitnessClient | None) -> tuple[SignedHead | None, SignedHead | None]:
    """The heads this site published before: its own record's and the witness's latest (``None`` when
    there is none), each verified and signed by this site's key."""
    assert config.published_head is not None
    record = HeadRecord.read(config.published_head)
    witnessed = None
    if witness is not None:
        try:
            _, heads = witness.heads(config.name, latest_only=True)
        except FedGwasError as error:
            raise ConfigError(f"site {config.name!r} cannot check its ledger against the witness "
                              f"([witness] address {config.witness}): {error}") from None
        witnessed = heads[-1][0] if heads else None
    for holder, head in _named(config, None if record is None else record.head, witnessed):
        head.verify()
        if head.site != config.name or head.public_key != public_key:
            raise ConfigError(f"the last head in {holder} is for site {head.site!r} under key {head.key_id}, not this "
                              f"site {config.name!r} under its key ([keys] ledger_signing_key)")
    return None if record is None else record.head, witnessed


def _named(config: SiteConfig, record: SignedHead | None,
           witnessed: SignedHead | None) -> list[tuple[str, SignedHead]]:
    """The held heads with who holds them, for messages."""
    return ([(f"its published-head record {str(config.published_head)!r}", record)] if record else []) + \
        ([(f"the witness at {config.witness}", witnessed)] if witnessed else [])


def open_checked_ledger(config: SiteConfig) -> tuple[Ledger, HeadPublisher]:
    """Open the site's ledger, refusing one that fails verification or does not extend a published head.

    Raises
    ------
    ConfigError
        No signing key configured, a missing ledger after heads were published, a broken chain, or a
        ledger that was rolled back or rewritten (the message names the published head).
    """
    if config.ledger_signing_key is None or config.ledger is None or config.published_head is None:
        raise ConfigError(f"{str(config.path)!r}: missing key [keys] ledger_signing_key: the site signs its ledger "
                          f"head after every task; create the key by running `fedgwas-site init` again (existing "
                          f"keys are kept) or set the path of an Ed25519 key file")
    key = load_signing_key(config.ledger_signing_key)
    witness = WitnessClient(config.witness) if config.witness else None
    record, witnessed = _held_heads(config, public_key_bytes(key), witness)
    held = _named(config, record, witnessed)
    published = max((head.seq for _, head in held), default=0)
    if published and not config.ledger.exists():
        holder, head = max(held, key=lambda pair: pair[1].seq)
        raise ConfigError(f"ledger {str(config.ledger)!r} is missing, but this site published a head at seq "
                          f"{head.seq} (signed at {head.time}, in {holder}): refusing to start on a new, empty "
                          f"ledger (the spent privacy budget would be lost); restore the ledger from its backup")
    ledger = Ledger(config.ledger, config.name, config.dataset)
    entries = ledger.entries()
    check = verify(entries)
    if not check.ok:
        raise ConfigError(f"ledger {str(config.ledger)!r} failed verification: {check.problem}; investigate with "
                          f"`fedgwas-site audit verify {config.ledger}` before serving")
    hashes = [entry.hash for entry in entries]
    for holder, head in held:
        problem = extension_problem(hashes, head, holder)
        if problem:
            raise ConfigError(f"ledger {str(config.ledger)!r} does not extend the last head this site published: "
                              f"{problem}. Refusing to serve; restore the ledger or ask the auditor")
    current = sign_head(key, config.name, len(entries), hashes[-1] if hashes else GENESIS)
    publisher = HeadPublisher(config.name, key, config.published_head, witness, current)
    if record is None or record.seq < len(entries) or (witness is not None and
                                                       (witnessed is None or witnessed.seq < len(entries))):
        publisher.publish(len(entries), current.hash)  # a new site, or entries a holder has not seen yet
    ledger.on_append = publisher
    return ledger, publisher
