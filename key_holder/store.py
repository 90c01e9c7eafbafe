"""The key holder's append-only, hash-chained record of what it agreed to and released (SQLite).

It lives in the keys directory (``key_holder.sqlite`` beside ``he_secret.ctx``) and is the key
holder's memory: every registration, released block, refused request, lock and operator reset is one
event, so a restart loses nothing. In particular a restarted key holder still knows

- which rounds are registered, and which of their blocks were already decrypted or refused;
- the SHA-256 of every ciphertext it decrypted, so the same aggregate is never decrypted again, under
  this registration or any other (and of every set of totals it released, for auditors);
- which studies are locked after a refused aggregate, and whether decryption as a whole is locked
  because refusals reached the budget (``locked`` after the last ``reset``).

Each event's ``hash`` is the SHA-256 of its canonical JSON content, which includes the previous
event's hash (as in the sites' ledgers, ``site_agent/ledger.py``). The chain is verified when the
store is opened; a broken chain is a :class:`~engine.errors.ConfigError` and the key holder does
not start.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ContextManager, Iterator

from engine.audit.ledger import GENESIS, canonical_json, durable_connection, exclusive_transaction
from engine.errors import ConfigError

STORE_FILE = "key_holder.sqlite"
#: ``registered`` a round; ``released`` a block's totals; ``refused`` a request (``detail.reason``);
#: ``locked`` decryption after too many refusals; ``reset`` by the operator (``fedgwas keyholder reset-lock``).
KINDS = ("registered", "released", "refused", "locked", "reset")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    time TEXT NOT NULL, kind TEXT NOT NULL, caller TEXT NOT NULL, registration TEXT NOT NULL, study TEXT NOT NULL,
    round INTEGER NOT NULL, block INTEGER NOT NULL, counted INTEGER NOT NULL, locks_study INTEGER NOT NULL,
    ciphertext_sha256 TEXT NOT NULL, release_sha256 TEXT NOT NULL, detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL, hash TEXT NOT NULL
)"""
_INDEXES = (
    "CREATE INDEX IF NOT EXISTS events_registration ON events (registration, kind)",
    "CREATE INDEX IF NOT EXISTS events_ciphertext ON events (ciphertext_sha256)",
    "CREATE INDEX IF NOT EXISTS events_study ON events (study, kind)",
    "CREATE INDEX IF NOT EXISTS events_kind ON events (kind, seq)",
)


@dataclass(frozen=True)
class StoreEvent:
    """One event. ``block`` is -1 when the event is not about one block; ``counted`` marks a refusal
    that counts against the refusal budget; ``locks_study`` a refusal that locks its study."""

    seq: int
    time: str
    kind: str
    caller: str
    registration: str
    study: str
    round: int
    block: int
    counted: int
    locks_study: int
    ciphertext_sha256: str
    release_sha256: str
    detail: str
    prev_hash: str
    hash: str

    def content_hash(self) -> str:
        """SHA-256 of every field but ``hash``, as canonical JSON (as the sites' ledger entries)."""
        return hashlib.sha256(canonical_json({k: v for k, v in dataclasses.asdict(self).items()
                                              if k != "hash"}).encode()).hexdigest()

    @property
    def details(self) -> dict[str, Any]:
        return json.loads(self.detail) if self.detail else {}


FIELDS = tuple(f.name for f in dataclasses.fields(StoreEvent))


def verify_chain(events: list[StoreEvent]) -> str | None:
    """The first problem of the hash chain (``None`` when intact): sequence, content hash, links."""
    previous = GENESIS
    for expected, event in enumerate(events, start=1):
        if event.seq != expected:
            return f"event {expected} is missing (found event {event.seq} in its place)"
        if event.content_hash() != event.hash:
            return f"event {event.seq} was edited: its hash does not match its content"
        if event.prev_hash != previous:
            return f"event {event.seq} does not follow event {event.seq - 1}"
        previous = event.hash
    return None


class KeyHolderStore:
    """The store at ``path``; each operation opens its own connection (safe across threads and the
    operator's ``reset-lock`` process); writes run in ``BEGIN IMMEDIATE`` transactions, durably."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        try:
            with self._connect() as connection:
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute(_SCHEMA)
                for statement in _INDEXES:
                    connection.execute(statement)
                rows = connection.execute(f"SELECT {', '.join(FIELDS)} FROM events ORDER BY seq").fetchall()
        except sqlite3.Error as exc:
            raise ConfigError(f"key holder store {str(self.path)!r} cannot be opened: {exc}") from None
        problem = verify_chain([StoreEvent(*row) for row in rows])
        if problem is not None:
            raise ConfigError(f"key holder store {str(self.path)!r} was tampered with: {problem}; "
                              "the key holder refuses to start on it")

    def _connect(self) -> ContextManager[sqlite3.Connection]:
        return durable_connection(self.path)

    @contextmanager
    def transaction(self) -> Iterator["StoreTransaction"]:
        """An exclusive write transaction; committed (durably) on normal exit, rolled back on error."""
        with exclusive_transaction(self.path) as connection:
            yield StoreTransaction(connection)

    def events(self) -> list[StoreEvent]:
        with self._connect() as connection:
            rows = connection.execute(f"SELECT {', '.join(FIELDS)} FROM events ORDER BY seq").fetchall()
        return [StoreEvent(*row) for row in rows]


class StoreTransaction:
    """Queries and appends within one open transaction (see :meth:`KeyHolderStore.transaction`)."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def _one(self, sql: str, *arguments: Any) -> Any:
        return self.connection.execute(sql, arguments).fetchone()

    def registration(self, registration_id: str) -> dict[str, Any] | None:
        """The registered round's detail (study_id, round, participants, block_values, ...), or None."""
        row = self._one("SELECT detail FROM events WHERE kind = 'registered' AND registration = ?", registration_id)
        return None if row is None else json.loads(row[0])

    def n_registrations(self) -> int:
        return int(self._one("SELECT COUNT(*) FROM events WHERE kind = 'registered'")[0])

    def block_consumed(self, registration_id: str, block: int) -> bool:
        """True once a block of a registration was released or refused (each is decrypted at most once)."""
        row = self._one("SELECT 1 FROM events WHERE registration = ? AND block = ? "
                        "AND kind IN ('released', 'refused') LIMIT 1", registration_id, block)
        return row is not None

    def ciphertext_seen(self, digest: str) -> bool:
        return self._one("SELECT 1 FROM events WHERE ciphertext_sha256 = ? LIMIT 1", digest) is not None

    def study_locked(self, study: str) -> bool:
        return self._one("SELECT 1 FROM events WHERE kind = 'refused' AND locks_study = 1 AND study = ? LIMIT 1",
                         study) is not None

    def _last_reset(self) -> int:
        return int(self._one("SELECT COALESCE(MAX(seq), 0) FROM events WHERE kind = 'reset'")[0])

    def counted_refusals(self) -> int:
        """Refusals that count against the budget since the operator's last reset."""
        return int(self._one("SELECT COUNT(*) FROM events WHERE kind = 'refused' AND counted = 1 AND seq > ?",
                             self._last_reset())[0])

    def locked(self) -> bool:
        """True while decryption is locked (a ``locked`` event after the last ``reset``)."""
        return self._one("SELECT 1 FROM events WHERE kind = 'locked' AND seq > ? LIMIT 1",
                         self._last_reset()) is not None

    def append(self, kind: str, *, caller: str = "", registration: str = "", study: str = "", round_: int = 0,
               block: int = -1,
               counted: bool = False, locks_study: bool = False, ciphertext_sha256: str = "",
               release_sha256: str = "", detail: dict[str, Any] | None = None) -> StoreEvent:
        """Append one event (its hash chained to the previous one)."""
        if kind not in KINDS:
            raise ValueError(f"unknown key holder event kind {kind!r}")
        last = self._one("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1")
        event = StoreEvent(
            seq=(last[0] + 1) if last else 1, time=datetime.now(timezone.utc).isoformat(timespec="microseconds"),
            kind=kind, caller=caller, registration=registration, study=study, round=round_, block=block,
            counted=int(counted),
            locks_study=int(locks_study), ciphertext_sha256=ciphertext_sha256, release_sha256=release_sha256,
            detail=canonical_json(detail or {}),
            prev_hash=last[1] if last else GENESIS, hash="")
        event = dataclasses.replace(event, hash=event.content_hash())
        self.connection.execute(f"INSERT INTO events ({', '.join(FIELDS)}) VALUES ({', '.join('?' * len(FIELDS))})",
                                dataclasses.astuple(event))
        return event
