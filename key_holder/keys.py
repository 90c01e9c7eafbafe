"""The key holder of homomorphic-encryption studies (``--privacy he``), independent of gRPC.

The key holder is its own process (``fedgwas keyholder serve``), run by a party that does not collude
with the coordinator. It alone loads the CKKS secret key (``he_secret.ctx``, written 0600 by
``fedgwas keys he``). The coordinator only ever sends it the **aggregate** ciphertext of a block,
and it releases plaintext totals only when all of these hold:

0. the caller is a configured coordinator: its mutual-TLS certificate names one of ``coordinators``
   (anyone else, a site included, is refused whatever it asks);
1. the round was registered beforehand (study, round, participants, values per block, encoding and
   the fingerprint of the public context the sites used);
2. the block has not been decrypted (or refused) before, and this ciphertext was never decrypted,
   under this registration or any other: the same aggregate is decrypted at most once (a
   re-randomised copy, the aggregate plus an encryption of zero, is another ciphertext: CKKS is
   malleable; what it yields is the same totals, and probing its noise costs refusals, below);
3. decryption is not locked: every refused decryption counts against a global refusal budget
   (``refusal_budget``, default 3); when it is spent, the key holder decrypts nothing for anyone
   until its operator runs ``fedgwas keyholder reset-lock``; a refused aggregate also locks its study
   for good;
4. the ciphertext is no larger than the registered block can be, parses under the key holder's
   context with the protocol's layout;
5. :func:`engine.privacy.he_encoding.decode` accepts the decryption: every slot within 1/8 of an integer
   (precision), every tag sum equal, modulo 2^30, to the offset the request states (only the sum over
   *every* survivor of the round has a tag sum anyone can know: not one site's block nor a partial
   sum, see below), zero padding, sums in range.

Tags and dropouts: each site's tags are its self mask plus its pairwise masks of the round (the secure
aggregation keys of :mod:`engine.privacy.secure_round`). The coordinator registers a round after its
consistency check, over the sites that delivered every block (the survivors), and states with each
block the tag offsets it computed from what the survivors revealed: their self-mask seeds and the
dropped sites' mask keys, never both for one site. Those give the tag sum of the survivors' aggregate
and of nothing else (the pairwise tags between two survivors and a dropped site's self tags stay
secret), so the offsets are public numbers the key holder need not trust: a wrong one is a refusal.

Every refused decryption, whatever the check, gets the same answer (:data:`REFUSAL`): a coordinator
probing with crafted ciphertexts learns one bit per refusal, never which check failed, and at most
``refusal_budget`` bits before an operator looks. The reason stays in the key holder's log and store.

What it releases is ``round(m + e) = m`` (exact integers, then fixed point to float64): a function
of the plaintext sum only, never of the CKKS noise, which is the Li–Micciancio (2021) mitigation
chosen here instead of Gaussian noise flooding (see docs/threat-model.md).

Registrations, released blocks (with the SHA-256 of the ciphertext and of the totals), refusals and
locks are events of an append-only, hash-chained store in the keys directory
(:mod:`key_holder.store`), so a restart forgets nothing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import stat
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from engine.privacy import he_encoding
from engine.privacy.he_rounds import PUBLIC_FILE, SECRET_FILE, RoundRegistration
from engine.errors import BudgetExceededError, ConfigError, FedGwasError, InputError, PrivacyError, ProtocolError
from engine.privacy.he import PARAMETERS, KeyPair, SecretContext, context_fingerprint, generate_keys
from key_holder.store import STORE_FILE, KeyHolderStore, StoreTransaction

log = logging.getLogger("key_holder.keys")

MAX_BLOCKS = 1_000_000
MAX_BLOCK_VALUES = 50_000_000
MAX_REGISTERED_ROUNDS = 100_000
#: Refused decryptions (by configured coordinators) after which decryption locks until an operator reset.
DEFAULT_REFUSAL_BUDGET = 3
#: ``coordinators`` entry that accepts any caller: only for a key holder serving plaintext (``--insecure``).
ANY_CALLER = "*"
#: A caller who is not a coordinator is recorded in the store at most once per this many seconds (then
#: only logged), so that refused calls cannot fill the key holder's disk.
UNAUTHORISED_RECORD_SECONDS = 60.0
#: The one answer to every refused decryption and to every request of a caller who is not a coordinator.
REFUSAL = "the key holder refused the request; nothing was decrypted or released"
#: Serialised bytes one ciphertext of the protocol's parameters can take (two polynomials of N
#: coefficients per prime, 8 bytes each, uncompressed), plus room for the container's framing.
CIPHERTEXT_BYTES = 2 * PARAMETERS.poly_modulus_degree * len(PARAMETERS.coeff_mod_bit_sizes) * 8
FRAMING_BYTES = 1 << 16




def write_key_files(directory: Path) -> str:
    """Generate a CKKS key pair into ``directory``; returns the public context's SHA-256.

    ``he_secret.ctx`` is created owner-only (0600) and never overwritten; ``he_public.ctx`` is what
    the coordinator and the sites receive.
    """
    directory.mkdir(parents=True, exist_ok=True)
    secret_path, public_path = directory / SECRET_FILE, directory / PUBLIC_FILE
    if secret_path.exists() or public_path.exists():
        raise InputError(f"{str(directory)!r} already holds HE keys ({SECRET_FILE}, {PUBLIC_FILE}); "
                         "refusing to overwrite them")
    keys: KeyPair = generate_keys()
    fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(keys.secret)
    public_path.write_bytes(keys.public)
    return context_fingerprint(keys.public)


def load_key_files(directory: Path) -> tuple[SecretContext, bytes]:
    """The secret context and the public context bytes from ``directory`` (``fedgwas keys he``).

    Refuses a secret file that group or others can read, and a public file that does not belong to
    the secret key (both :class:`ConfigError`, naming the file).
    """
    secret_path, public_path = directory / SECRET_FILE, directory / PUBLIC_FILE
    try:
        mode = stat.S_IMODE(secret_path.stat().st_mode)
        secret, public = secret_path.read_bytes(), public_path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the HE keys in {str(directory)!r}: {exc.strerror} ({exc.filename}); "
                          "create them with: fedgwas keys he --out DIR") from None
    if mode & 0o077:
        raise ConfigError(f"{str(secret_path)!r} is readable by group or others (mode {mode:o}); "
                          f"restrict it with: chmod 600 {secret_path}")
    context = SecretContext(secret)
    if context_fingerprint(context.public_bytes()) != context_fingerprint(public):
        raise ConfigError(f"{str(public_path)!r} is not the public context of {str(secret_path)!r}")
    return context, public


class KeyHolderRefusal(PrivacyError):
    """A refused decryption (or a caller who is not a coordinator): always the message :data:`REFUSAL`.

    ``reason`` says which check failed; it goes to the key holder's log and store, never on the wire.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(REFUSAL)
        self.reason = reason


@dataclass(frozen=True)
class BlockRequest:
    """The header of one decryption: which registered block, how many values, how many bytes follow."""

    registration_id: str
    study_id: str
    round: int
    block: int
    n_values: int
    total_bytes: int
    tag_offsets: tuple[int, ...] = ()  # two per ciphertext, each below 2^30 (empty: all zero)

    def offsets(self) -> np.ndarray:
        """The tag offsets ``(n_ciphertexts, TAGS_PER_CIPHERTEXT)`` (zeros when none were stated)."""
        n = he_encoding.n_ciphertexts(self.n_values)
        if not self.tag_offsets:
            return np.zeros((n, he_encoding.TAGS_PER_CIPHERTEXT), dtype=np.int64)
        return np.asarray(self.tag_offsets, dtype=np.int64).reshape(n, he_encoding.TAGS_PER_CIPHERTEXT)


def max_aggregate_bytes(n_values: int) -> int:
    """Most bytes an honest aggregate of ``n_values`` statistics can take on the wire."""
    return he_encoding.n_ciphertexts(n_values) * CIPHERTEXT_BYTES + FRAMING_BYTES


def release_digest(totals: np.ndarray) -> str:
    """SHA-256 of released totals (little-endian float64), recorded with each release for auditors."""
    return hashlib.sha256(np.ascontiguousarray(totals, dtype="<f8").tobytes()).hexdigest()


def reset_lock(keys: Path, operator_note: str) -> int:
    """Unlock decryption after the refusal budget was spent (``fedgwas keyholder reset-lock``).

    Appends a ``reset`` event (with ``operator_note``) to the store in ``keys``; returns the number of
    counted refusals it clears. Locks of single studies stay (a study with a refused aggregate is never
    decrypted again). Safe while the key holder is running: it reads the lock state from the store.
    """
    if not (keys / STORE_FILE).is_file():
        raise ConfigError(f"{str(keys / STORE_FILE)!r} does not exist: no key holder has served {str(keys)!r}")
    store = KeyHolderStore(keys / STORE_FILE)
    if not operator_note.strip():
        raise InputError("say why the lock is reset (--reason TEXT): it is recorded in the key holder's store")
    with store.transaction() as tx:
        cleared, was_locked = tx.counted_refusals(), tx.locked()
        tx.append("reset", caller="operator", detail={"note": operator_note, "was_locked": was_locked,
                                                      "refusals_cleared": cleared})
    log.warning("operator reset the refusal lock (%d refusals cleared): %s", cleared, operator_note)
    return cleared


class KeyHolder:
    """Registrations and decryptions for every study served by one key holder (thread-safe).

    Parameters
    ----------
    context
        The secret CKKS context (from :func:`load_key_files`).
    public
        The serialised public context, served as is to the coordinator (and through it to sites).
    store
        The append-only record of registrations, releases, refusals and locks (:mod:`key_holder.store`).
    coordinators
        Certificate identities (CN) allowed to call; ``("*",)`` accepts any caller, only sensible on a
        plaintext development port where callers have no identity.
    min_participants
        Fewest sites a registered round may have: a "sum" over one site would be that site's data.
    refusal_budget
        Refused decryptions after which nothing more is decrypted until an operator reset.
    """

    def __init__(self, context: SecretContext, public: bytes, store: KeyHolderStore, coordinators: Iterable[str],
                 min_participants: int = 2, refusal_budget: int = DEFAULT_REFUSAL_BUDGET) -> None:
        if min_participants < 2:
            raise ConfigError(f"min_participants must be >= 2, got {min_participants}")
        if refusal_budget < 1:
            raise ConfigError(f"refusal_budget must be >= 1, got {refusal_budget}")
        self.coordinators = tuple(coordinators)
        if not self.coordinators or any(not name for name in self.coordinators):
            raise ConfigError("name the coordinator(s) allowed to call the key holder (certificate CNs), "
                              f"got {list(self.coordinators)}")
        self._context = context
        self.public = public
        self.fingerprint = context_fingerprint(public)
        self.store = store
        self.min_participants = min_participants
        self.refusal_budget = refusal_budget
        self._lock = threading.Lock()
        self._inflight: set[tuple[str, int]] = set()
        self._inflight_digests: set[str] = set()
        self._unauthorised_recorded: dict[str, float] = {}
        self.decrypted_blocks = 0

    # -- who may call ------------------------------------------------------------------------------------

    def is_coordinator(self, caller: str | None) -> bool:
        """True for a configured coordinator's certificate identity (or anyone, with ``"*"``)."""
        return ANY_CALLER in self.coordinators or (caller is not None and caller in self.coordinators)

    def authorise(self, caller: str | None, what: str) -> None:
        """Refuse (uniformly, not counted against the budget) a caller who is not a configured coordinator.

        The refusal is recorded in the store, at most once per :data:`UNAUTHORISED_RECORD_SECONDS` per
        caller (always logged).
        """
        if self.is_coordinator(caller):
            return
        reason = f"{caller or 'an unidentified peer'!r} is not a configured coordinator ({what})"
        now = time.monotonic()
        with self._lock:
            last = self._unauthorised_recorded.get(caller or "")
            record = last is None or now - last >= UNAUTHORISED_RECORD_SECONDS
            if record:
                if len(self._unauthorised_recorded) >= 10_000:
                    self._unauthorised_recorded.clear()
                self._unauthorised_recorded[caller or ""] = now
        if record:
            with self.store.transaction() as tx:
                tx.append("refused", caller=caller or "", detail={"reason": reason})
        log.warning("refused %s", reason)
        raise KeyHolderRefusal(reason)

    # -- registration ------------------------------------------------------------------------------------

    def register(self, registration: RoundRegistration, caller: str | None = None) -> tuple[str, int]:
        """Accept a round; returns its registration id and number of blocks. Raises PrivacyError or ProtocolError.

        The id, chosen here, is what every decryption of the round names. The same study and round may be
        registered again (a re-run): what is never decrypted twice is an aggregate, whatever registration
        it comes under.
        """
        self.authorise(caller, f"register round {registration.round} of {registration.study_id!r}")
        r = registration
        names = list(r.participants)
        if not r.study_id:
            raise ProtocolError("registration.study_id is empty")
        if len(set(names)) != len(names) or any(not n for n in names):
            raise ProtocolError(f"registration.participants must be distinct non-empty names, got {names}")
        if not self.min_participants <= len(names) <= he_encoding.MAX_PARTIES:
            raise PrivacyError(f"the key holder decrypts sums over {self.min_participants} to "
                               f"{he_encoding.MAX_PARTIES} sites; round {r.round} of {r.study_id!r} lists {len(names)}")
        if r.encoding != he_encoding.ENCODING:
            raise ProtocolError(f"registration.encoding {r.encoding!r} is not {he_encoding.ENCODING!r}")
        if r.context_sha256 != self.fingerprint:
            raise PrivacyError(f"the round was encrypted under context {r.context_sha256[:16]}..., not this key "
                               f"holder's {self.fingerprint[:16]}...")
        if not 1 <= len(r.block_values) <= MAX_BLOCKS or any(not 1 <= v <= MAX_BLOCK_VALUES for v in r.block_values):
            raise ProtocolError(f"registration.block_values must list 1 to {MAX_BLOCKS} blocks of 1 to "
                                f"{MAX_BLOCK_VALUES} values")
        with self._lock, self.store.transaction() as tx:
            self._refuse_if_locked(tx)
            if tx.study_locked(r.study_id):
                raise PrivacyError(f"study {r.study_id!r} is locked at the key holder after a refused aggregate; "
                                   "nothing more is decrypted for it")
            if tx.n_registrations() >= MAX_REGISTERED_ROUNDS:
                raise PrivacyError(f"the key holder has reached its limit of {MAX_REGISTERED_ROUNDS} registered rounds")
            registration_id = secrets.token_hex(16)
            tx.append("registered", caller=caller or "", registration=registration_id, study=r.study_id,
                      round_=r.round, detail={**asdict(r), "participants": names, "block_values": list(r.block_values)})
        log.info("registered study %s round %d as %s: %d sites, %d blocks", r.study_id, r.round, registration_id,
                 len(names), len(r.block_values))
        return registration_id, len(r.block_values)

    def _refuse_if_locked(self, tx: StoreTransaction) -> None:
        if tx.locked():
            raise BudgetExceededError(
                f"decryption is locked at the key holder: refused requests reached its budget of "
                f"{self.refusal_budget}; its operator unlocks it with `fedgwas keyholder reset-lock`")

    # -- decryption --------------------------------------------------------------------------------------

    def _refuse(self, caller: str | None, request: BlockRequest, reason: str, *, locks_study: bool = False,
                ciphertext_sha256: str = "") -> KeyHolderRefusal:
        """Record a refused decryption (counted against the budget; locking when it is spent)."""
        with self.store.transaction() as tx:
            tx.append("refused", caller=caller or "", registration=request.registration_id, study=request.study_id,
                      round_=request.round,
                      block=request.block, counted=True, locks_study=locks_study,
                      ciphertext_sha256=ciphertext_sha256, detail={"reason": reason})
            refusals = tx.counted_refusals()
            if refusals >= self.refusal_budget and not tx.locked():
                tx.append("locked", detail={"refusals": refusals, "budget": self.refusal_budget})
                log.warning("decryption locked after %d refused requests; reset with `fedgwas keyholder reset-lock`",
                            refusals)
        log.warning("refused block %d of study %s round %d%s: %s", request.block, request.study_id, request.round,
                    " and locked the study" if locks_study else "", reason)
        return KeyHolderRefusal(reason)

    def begin(self, caller: str | None, request: BlockRequest) -> None:
        """Everything checkable before the ciphertext is read; reserves the block. Raises KeyHolderRefusal.

        Called on the stream's header, so a refused caller never gets to send (or make the key holder
        buffer) a ciphertext, and an accepted one may send at most :func:`max_aggregate_bytes`.
        """
        self.authorise(caller, f"decrypt block {request.block} of round {request.round} of {request.study_id!r}")
        key = (request.registration_id, request.block)
        with self._lock:
            with self.store.transaction() as tx:
                reason = self._pre_check(tx, request, key)
            if reason is None:
                self._inflight.add(key)
        if reason is not None:
            raise self._refuse(caller, request, reason)

    def _pre_check(self, tx: StoreTransaction, request: BlockRequest, key: tuple[str, int]) -> str | None:
        if tx.locked():
            return "decryption is locked (refusal budget spent)"
        if tx.study_locked(request.study_id):
            return "the study is locked after a refused aggregate"
        registration = tx.registration(request.registration_id)
        if registration is None or (registration["study_id"], registration["round"]) != (request.study_id,
                                                                                         request.round):
            return "the round is not registered (or not under this registration id)"
        blocks = registration["block_values"]
        if not 0 <= request.block < len(blocks) or blocks[request.block] != request.n_values:
            return f"block {request.block} with {request.n_values} values does not match the registration"
        if key in self._inflight or tx.block_consumed(*key):
            return "the block was already decrypted or refused"
        if not 0 < request.total_bytes <= max_aggregate_bytes(request.n_values):
            return f"the ciphertext is declared as {request.total_bytes} bytes, out of range for the block"
        expected = he_encoding.n_ciphertexts(request.n_values) * he_encoding.TAGS_PER_CIPHERTEXT
        if request.tag_offsets and (len(request.tag_offsets) != expected or
                                    any(not 0 <= v < 2 ** he_encoding.TAG_BITS for v in request.tag_offsets)):
            return f"the request states {len(request.tag_offsets)} tag offsets, the block takes {expected} below 2^30"
        return None

    def finish(self, caller: str | None, request: BlockRequest, ciphertext: bytes) -> np.ndarray:
        """Decrypt a block reserved by :meth:`begin`; released float64 totals ``(n_values,)`` or a refusal."""
        key = (request.registration_id, request.block)
        digest = hashlib.sha256(ciphertext).hexdigest()
        try:
            with self._lock:
                with self.store.transaction() as tx:
                    seen = tx.ciphertext_seen(digest) or digest in self._inflight_digests
                    registration = tx.registration(request.registration_id)
                    locked = tx.locked()
                if not seen:
                    self._inflight_digests.add(digest)
            if locked:
                raise self._refuse(caller, request, "decryption is locked (refusal budget spent)")
            if seen:
                raise self._refuse(caller, request, "this ciphertext was decrypted before", locks_study=True,
                                   ciphertext_sha256=digest)
            assert registration is not None  # begin() checked it, and registrations are never removed
            try:
                return self._decrypt(caller, request, registration, ciphertext, digest)
            finally:
                with self._lock:
                    self._inflight_digests.discard(digest)
        finally:
            with self._lock:
                self._inflight.discard(key)

    def _decrypt(self, caller: str | None, request: BlockRequest, registration: dict, ciphertext: bytes,
                 digest: str) -> np.ndarray:
        n_parties = len(registration["participants"])
        try:
            slots = self._context.decrypt(ciphertext, he_encoding.n_ciphertexts(request.n_values))
            decoded = he_encoding.decode(slots, request.n_values, n_parties, request.offsets())
        except (PrivacyError, ProtocolError) as error:
            raise self._refuse(caller, request, str(error), locks_study=True, ciphertext_sha256=digest) from None
        with self._lock, self.store.transaction() as tx:
            tx.append("released", caller=caller or "", registration=request.registration_id, study=request.study_id,
                      round_=request.round, block=request.block, ciphertext_sha256=digest,
                      release_sha256=release_digest(decoded.values),
                      detail={"n_values": request.n_values, "n_participants": n_parties})
            self.decrypted_blocks += 1
        log.info("released block %d of study %s round %d (%d values, %d sites, max slot deviation %.2g)",
                 request.block, request.study_id, request.round, request.n_values, n_parties, decoded.max_deviation)
        return self._release(decoded.values)

    def abandon(self, caller: str | None, request: BlockRequest | None, error: FedGwasError) -> KeyHolderRefusal:
        """A malformed stream (no header, chunks out of order, too long, truncated): refused, recorded, counted."""
        try:
            return self._refuse(caller, request or BlockRequest("", "", 0, -1, 0, 0),
                                f"the ciphertext stream was malformed: {error}")
        finally:
            if request is not None:
                self.cancel(request)

    def cancel(self, request: BlockRequest) -> None:
        """Release the reservation of a block whose stream the caller abandoned (nothing was decrypted)."""
        with self._lock:
            self._inflight.discard((request.registration_id, request.block))

    def decrypt(self, registration_id: str, study_id: str, round_: int, block: int, n_values: int,
                ciphertext: bytes, caller: str | None = None, tag_offsets: np.ndarray | None = None) -> np.ndarray:
        """:meth:`begin` then :meth:`finish` for a ciphertext already in memory."""
        offsets = () if tag_offsets is None else tuple(int(v) for v in np.ravel(tag_offsets))
        request = BlockRequest(registration_id, study_id, round_, block, n_values, len(ciphertext), offsets)
        self.begin(caller, request)
        return self.finish(caller, request, ciphertext)

    def _release(self, totals: np.ndarray) -> np.ndarray:
        """The values that leave the key holder for one block: the decrypted totals.

        With differential privacy, each site has already added its share of the calibrated noise
        before encrypting (engine/privacy/dp_release.py), so the decrypted total is the noisy release and no
        noise is added here (adding more would only cost utility, not buy privacy).
        """
        return totals
