"""The key holder of homomorphic-encryption studies (``--privacy he``), independent of gRPC.

The key holder is its own process (``fedgwas keyholder serve``), run by a party that does not collude
with the coordinator. It alone loads the CKKS secret key (``he_secret.ctx``, written 0600 by
``fedgwas keys he``). The coordinator only ever sends it the **aggregate** ciphertext of a block,
and it releases plaintext totals only when all of these hold:

1. the round was registered beforehand (study, round, participants, values per block, encoding and
   the fingerprint of the public context the sites used);
2. the block has not been decrypted before (each block of a round is decrypted at most once, so the
   same aggregate can never be decrypted twice to average anything away);
3. the study is not locked: after any refused aggregate the key holder refuses everything else of
   that study, so a coordinator that probes with crafted ciphertexts learns at most one bit;
4. the ciphertext parses under the key holder's context with the protocol's layout;
5. :func:`engine.privacy.he_encoding.decode` accepts the decryption: every slot within 1/8 of an integer
   (precision), every tag sum a multiple of 2^30 (the sum of *every* participant, not one site's
   block nor a partial sum), zero padding, sums in range.

What it releases is ``round(m + e) = m`` (exact integers, then fixed point to float64): a function
of the plaintext sum only, never of the CKKS noise, which is the Li–Micciancio (2021) mitigation
chosen here instead of Gaussian noise flooding (see docs/threat-model.md). Refusal messages say
which check failed but never by how much; the details stay in the key holder's log.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.privacy import he_encoding
from engine.privacy.he_rounds import PUBLIC_FILE, SECRET_FILE, RoundRegistration
from engine.errors import ConfigError, InputError, PrivacyError, ProtocolError
from engine.privacy.he import KeyPair, SecretContext, context_fingerprint, generate_keys

log = logging.getLogger("key_holder.keys")

MAX_BLOCKS = 1_000_000
MAX_BLOCK_VALUES = 50_000_000
MAX_REGISTERED_ROUNDS = 100_000


@dataclass
class _RoundState:
    registration: RoundRegistration
    decrypted: set[int] = field(default_factory=set)


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


class KeyHolder:
    """Registrations and decryptions for every study served by one key holder (thread-safe).

    Parameters
    ----------
    context
        The secret CKKS context (from :func:`load_key_files`).
    public
        The serialised public context, served as is to the coordinator (and through it to sites).
    min_participants
        Fewest sites a registered round may have: a "sum" over one site would be that site's data.
    """

    def __init__(self, context: SecretContext, public: bytes, min_participants: int = 2) -> None:
        if min_participants < 2:
            raise ConfigError(f"min_participants must be >= 2, got {min_participants}")
        self._context = context
        self.public = public
        self.fingerprint = context_fingerprint(public)
        self.min_participants = min_participants
        self._rounds: dict[tuple[str, int], _RoundState] = {}
        self._locked: dict[str, str] = {}
        self._lock = threading.Lock()
        self.decrypted_blocks = 0

    def register(self, registration: RoundRegistration) -> int:
        """Accept a round; returns its number of blocks. Raises PrivacyError or ProtocolError."""
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
        with self._lock:
            self._refuse_if_locked(r.study_id)
            key = (r.study_id, r.round)
            if key in self._rounds:
                raise PrivacyError(f"round {r.round} of study {r.study_id!r} is already registered")
            if len(self._rounds) >= MAX_REGISTERED_ROUNDS:
                raise PrivacyError("the key holder has reached its limit of registered rounds; restart it")
            self._rounds[key] = _RoundState(registration)
        log.info("registered study %s round %d: %d sites, %d blocks", r.study_id, r.round, len(names),
                 len(r.block_values))
        return len(r.block_values)

    def _refuse_if_locked(self, study_id: str) -> None:
        if study_id in self._locked:
            raise PrivacyError(f"study {study_id!r} is locked at the key holder after a refused aggregate "
                               f"({self._locked[study_id]}); nothing more is decrypted for it")

    def decrypt(self, study_id: str, round_: int, block: int, n_values: int, ciphertext: bytes) -> np.ndarray:
        """Released float64 totals ``(n_values,)`` of a registered block's aggregate, or a refusal."""
        with self._lock:
            self._refuse_if_locked(study_id)
            state = self._rounds.get((study_id, round_))
            if state is None:
                raise PrivacyError(f"round {round_} of study {study_id!r} is not registered: the key holder "
                                   "decrypts only aggregates of registered rounds")
            blocks = state.registration.block_values
            if not 0 <= block < len(blocks) or blocks[block] != n_values:
                raise ProtocolError(f"block {block} with {n_values} values does not match the registration of "
                                    f"round {round_} ({len(blocks)} blocks)")
            if block in state.decrypted:
                raise PrivacyError(f"block {block} of round {round_} of study {study_id!r} was already decrypted; "
                                   "each aggregate is decrypted once")
            state.decrypted.add(block)
        n_parties = len(state.registration.participants)
        try:
            slots = self._context.decrypt(ciphertext, he_encoding.n_ciphertexts(n_values))
            decoded = he_encoding.decode(slots, n_values, n_parties)
        except (PrivacyError, ProtocolError) as error:
            with self._lock:
                self._locked[study_id] = f"block {block} of round {round_}: {error}"
            log.warning("refused block %d of study %s round %d and locked the study: %s", block, study_id,
                        round_, error)
            raise
        log.info("released block %d of study %s round %d (%d values, %d sites, max slot deviation %.2g)", block,
                 study_id, round_, n_values, n_parties, decoded.max_deviation)
        with self._lock:
            self.decrypted_blocks += 1
        return self._release(decoded.values, state.registration)

    def _release(self, totals: np.ndarray, registration: RoundRegistration) -> np.ndarray:
        """The values that leave the key holder for one block: the decrypted totals.

        With differential privacy, each site has already added its share of the calibrated noise
        before encrypting (engine/privacy/dp_release.py), so the decrypted total is the noisy release and no
        noise is added here (adding more would only cost utility, not buy privacy).
        """
        return totals
