"""The site's append-only, hash-chained ledger of every task (SQLite), and its verification.

Every task a site receives leaves entries here, DP or not: ``refused`` (with the reason), or
``accepted`` (with the privacy loss charged) followed by ``released`` (with the SHA-256 of what left
the site, see :mod:`engine.audit.records`) or ``aborted``; a DP budget pre-check leaves ``checked`` or
``refused``. An ``accepted`` entry is committed durably (SQLite, WAL, ``synchronous=FULL``) before the
first result block is computed, so a crash can never release an uncharged result: at worst a charge
has no release.

Each entry's ``hash`` is the SHA-256 of its canonical JSON content, which includes the previous
entry's hash. Editing an entry breaks its own hash; removing or reordering entries breaks the link
or the sequence. Removing the *last* entries cannot be seen from the chain alone: compare with the
coordinator's log (``fedgwas audit cross-check``) or with a head hash recorded earlier
(``fedgwas-site audit verify --head``).
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
from typing import Any, Callable, ContextManager, Iterator, Mapping

from engine.errors import ConfigError

GENESIS = "0" * 64
KINDS = ("accepted", "released", "aborted", "refused", "checked", "described", "overlap")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY,
    time TEXT NOT NULL, kind TEXT NOT NULL, site TEXT NOT NULL, dataset TEXT NOT NULL,
    requester TEXT NOT NULL, study TEXT NOT NULL, round INTEGER NOT NULL, request_id TEXT NOT NULL,
    analysis TEXT NOT NULL, parameters TEXT NOT NULL, n_participants INTEGER NOT NULL,
    mechanism TEXT NOT NULL, rho REAL NOT NULL, epsilon REAL NOT NULL, delta REAL NOT NULL,
    budget TEXT NOT NULL, digest TEXT NOT NULL, ref INTEGER NOT NULL, message TEXT NOT NULL,
    prev_hash TEXT NOT NULL, hash TEXT NOT NULL
)"""


@dataclass(frozen=True)
class LedgerEntry:
    """One ledger row. ``mechanism`` is ``gaussian``, ``laplace`` or ``exact`` (a release without DP,
    whose ``rho`` is 0 because it is outside the DP budget); ``ref`` is the ``accepted`` entry that a
    ``released``/``aborted`` entry closes; ``budget`` is the site's budget policy (JSON) when charged."""

    seq: int
    time: str
    kind: str
    site: str
    dataset: str
    requester: str
    study: str
    round: int
    request_id: str
    analysis: str
    parameters: str
    n_participants: int
    mechanism: str
    rho: float
    epsilon: float
    delta: float
    budget: str
    digest: str
    ref: int
    message: str
    prev_hash: str
    hash: str

    def content_hash(self) -> str:
        """SHA-256 of every field but ``hash``, as canonical JSON."""
        content = {k: v for k, v in dataclasses.asdict(self).items() if k != "hash"}
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(canonical.encode()).hexdigest()

    @property
    def budget_policy(self) -> dict[str, Any]:
        return json.loads(self.budget) if self.budget else {}


FIELDS = tuple(f.name for f in dataclasses.fields(LedgerEntry))


@contextmanager
def durable_connection(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection to an append-only SQLite record (autocommit, ``synchronous=FULL``), closed on exit."""
    connection = sqlite3.connect(path, timeout=60.0, isolation_level=None)
    try:
        connection.execute("PRAGMA synchronous=FULL")
        yield connection
    finally:
        connection.close()


@contextmanager
def exclusive_transaction(path: Path) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` on a :func:`durable_connection`: committed on normal exit, rolled back on error."""
    with durable_connection(path) as connection:
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")


def canonical_json(value: Mapping[str, Any]) -> str:
    return json.dumps(dict(value), sort_keys=True, separators=(",", ":"), allow_nan=False)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


class Ledger:
    """A site's ledger file. Each operation opens its own connection (safe across the server's
    threads and processes); appends run inside ``BEGIN IMMEDIATE`` so that a budget check and the
    charge it allows are one atomic step.

    ``on_append`` (if set) is called with the last entry of every committed transaction that appended
    one, after the commit: the site signs and publishes its new head there (site_agent/head_publisher.py).
    """

    def __init__(self, path: Path | str, site: str, dataset: str,
                 on_append: Callable[[LedgerEntry], None] | None = None) -> None:
        self.path = Path(path)
        self.site = site
        self.dataset = dataset
        self.on_append = on_append
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as connection:
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute(_SCHEMA)
        except sqlite3.Error as exc:
            raise ConfigError(f"ledger {str(self.path)!r} cannot be opened: {exc}") from None

    def _connect(self) -> ContextManager[sqlite3.Connection]:
        return durable_connection(self.path)

    @contextmanager
    def transaction(self) -> Iterator["_Appender"]:
        """An exclusive write transaction; committed (durably) on normal exit, rolled back on error."""
        with exclusive_transaction(self.path) as connection:
            appender = _Appender(self, connection)
            yield appender
        if appender.last is not None and self.on_append is not None:  # after the commit: sign and publish
            self.on_append(appender.last)

    def append(self, **fields: Any) -> LedgerEntry:
        """Append one entry (see :class:`LedgerEntry`; unspecified fields are empty) and commit it."""
        with self.transaction() as appender:
            return appender.append(**fields)

    def entries(self) -> list[LedgerEntry]:
        with self._connect() as connection:
            return read_entries(connection)


class _Appender:
    """Appends within one open transaction (see :meth:`Ledger.transaction`)."""

    def __init__(self, ledger: Ledger, connection: sqlite3.Connection) -> None:
        self.ledger = ledger
        self.connection = connection
        self.last: LedgerEntry | None = None  # the last entry appended in this transaction

    def rho_spent(self, *, dataset: str, study: str | None = None, requester: str | None = None) -> float:
        """Sum of the zCDP charges of ``accepted`` entries for the dataset (and study / requester)."""
        sql = "SELECT COALESCE(SUM(rho), 0.0) FROM entries WHERE kind = 'accepted' AND dataset = ?"
        arguments: list[Any] = [dataset]
        if study is not None:
            sql += " AND study = ?"
            arguments.append(study)
        if requester is not None:
            sql += " AND requester = ?"
            arguments.append(requester)
        return float(self.connection.execute(sql, arguments).fetchone()[0])

    def request_seen(self, request_id: str) -> int | None:
        """The first entry of any kind (refused, checked, accepted...) recording ``request_id``, if any."""
        row = self.connection.execute("SELECT seq FROM entries WHERE request_id = ? ORDER BY seq LIMIT 1",
                                      (request_id,)).fetchone()
        return None if row is None else int(row[0])

    def append(self, **fields: Any) -> LedgerEntry:
        unknown = set(fields) - set(FIELDS)
        if unknown or fields.get("kind") not in KINDS:
            raise ValueError(f"bad ledger entry: unknown fields {sorted(unknown)} or kind {fields.get('kind')!r}")
        last = self.connection.execute("SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
        defaults: dict[str, Any] = {
            "time": _now(), "site": self.ledger.site, "dataset": self.ledger.dataset, "requester": "", "study": "",
            "round": 0, "request_id": "", "analysis": "", "parameters": "{}", "n_participants": 0,
            "mechanism": "", "rho": 0.0, "epsilon": 0.0, "delta": 0.0, "budget": "", "digest": "", "ref": 0,
            "message": "",
        }
        values = {**defaults, **fields, "seq": (last[0] + 1) if last else 1, "prev_hash": last[1] if last else GENESIS}
        for key in ("rho", "epsilon", "delta"):
            values[key] = float(values[key])
        entry = LedgerEntry(**values, hash="")
        entry = dataclasses.replace(entry, hash=entry.content_hash())
        row = dataclasses.astuple(entry)
        self.connection.execute(f"INSERT INTO entries ({', '.join(FIELDS)}) VALUES ({', '.join('?' * len(FIELDS))})", row)
        self.last = entry
        return entry


def read_entries(connection: sqlite3.Connection) -> list[LedgerEntry]:
    rows = connection.execute(f"SELECT {', '.join(FIELDS)} FROM entries ORDER BY seq").fetchall()
    return [LedgerEntry(*row) for row in rows]


def open_entries(path: Path | str) -> list[LedgerEntry]:
    """Every entry of the ledger file at ``path``, read-only (for auditors)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"ledger {str(path)!r} does not exist")
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            return read_entries(connection)
        finally:
            connection.close()
    except (sqlite3.Error, TypeError) as exc:
        raise ConfigError(f"{str(path)!r} is not a fedgwas ledger: {exc}") from None


@dataclass(frozen=True)
class Verification:
    """Outcome of :func:`verify`: ``first_bad`` is the sequence number of the first entry that fails
    (0 when the chain is intact) and ``problem`` says how."""

    n_entries: int
    head: str
    first_bad: int = 0
    problem: str = ""

    @property
    def ok(self) -> bool:
        return self.first_bad == 0


def verify(entries: list[LedgerEntry], head: str | None = None) -> Verification:
    """Check the hash chain: sequence 1, 2, ..., each hash over its content, each link to its predecessor.

    ``head``: a hash recorded earlier (e.g. published by the site); it must still be in the chain,
    which detects the removal of entries at the end up to that point.
    """
    previous = GENESIS
    for expected, entry in enumerate(entries, start=1):
        if entry.seq != expected:
            what = "removed" if entry.seq > expected else "duplicated or reordered"
            return Verification(len(entries), previous, expected,
                                f"entry {expected} is missing: found entry {entry.seq} in its place ({what})")
        if entry.content_hash() != entry.hash:
            moved = next((other for other in range(1, len(entries) + 2) if other != entry.seq
                          and dataclasses.replace(entry, seq=other).content_hash() == entry.hash), None)
            if moved is not None:
                return Verification(len(entries), previous, entry.seq,
                                    f"entries were reordered: entry {entry.seq} holds the content of entry {moved}")
            return Verification(len(entries), previous, entry.seq,
                                f"entry {entry.seq} was edited: its hash does not match its content")
        if entry.prev_hash != previous:
            return Verification(len(entries), previous, entry.seq,
                                f"entry {entry.seq} does not follow entry {entry.seq - 1}: an entry was removed, "
                                f"replaced or reordered")
        previous = entry.hash
    if head is not None and head not in {e.hash for e in entries}:
        return Verification(len(entries), previous, len(entries) + 1,
                            f"the recorded head {head[:16]}... is not in the ledger: entries were removed from its end")
    return Verification(len(entries), previous)

