"""What a site has released exactly, so that no study recomputes it over another set of sites or samples.

Two rules, both decided from the site's own records (SQLite beside its ledger), never from the task:

* **Same statistics, other participants** (restart differencing): every exact release records one
  64-bit key per variant (the study, the analysis, the cohort, every input and option that changes the
  values, and the site's own variant row and flip) with the set of sites it was summed over. A later
  exact task of the study sharing any key with a release over *another* set is refused: the difference
  of two sums over ``{A, B, C}`` and ``{A, B}`` is C's statistics. A DP release is exempt: it is charged
  again and its fresh noise hides the difference.
* **Other samples** (cohort differencing): a study's exact releases may use at most
  :data:`MAX_SAMPLE_SETS` distinct sample sets at the site, and two of them must differ on each side by
  zero or at least ``[access] min_cohort_difference`` samples. Inclusion-exclusion needs at least three
  sets (``U, U+S1, U+S2, U+S1+S2+t`` isolates ``t``); two sets give only ``stats(A \\ B) - stats(B \\ A)``.
  A study's purpose is pinned in its approval (``[[access.study]] purpose``), so consent subsets cannot
  be varied either.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Iterator

import numpy as np

from engine.stats.registry import get_statistic
from engine.audit.records import REQUEST_ID_KEY
from engine.privacy.dp_release import PHASE_KEY
from engine.errors import PrivacyError
from engine.privacy.secure_round import encode
from engine.tasks import KEEP_GENOTYPES_PARAMETER, TaskSpec

#: Distinct sample sets one study may use for exact releases at one site.
MAX_SAMPLE_SETS = 2
#: Parameters that do not change the values released.
_NOT_STATISTICS = frozenset({REQUEST_ID_KEY, PHASE_KEY, KEEP_GENOTYPES_PARAMETER})
_SCHEMA = ("CREATE TABLE IF NOT EXISTS releases (study TEXT NOT NULL, participants TEXT NOT NULL, keys BLOB NOT NULL)",
           "CREATE TABLE IF NOT EXISTS samples (study TEXT NOT NULL, digest TEXT NOT NULL, n_fam INTEGER NOT NULL, "
           "members BLOB NOT NULL, PRIMARY KEY (study, digest))")
_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


def registry_path(ledger: Path) -> Path:
    return ledger.with_name(ledger.stem + ".releases.sqlite")


def _mix(values: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, vectorised (uint64 arithmetic wraps)."""
    z = values + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def statistic_keys(task: TaskSpec) -> np.ndarray:
    """One uint64 key per variant of ``task``: equal keys, equal statistics (for the same site data)."""
    analysis = get_statistic(task.analysis)
    per_variant = sorted(name for name in task.inputs if analysis.inputs[name].per_variant)
    shared = {name: np.asarray(v) for name, v in task.inputs.items() if name not in per_variant}
    cohort = task.cohort
    data_use = None if cohort.data_use is None else (cohort.data_use.purpose, cohort.data_use.commercial)
    base = hashlib.sha256(encode((task.study_id, task.analysis, cohort.phenotype, tuple(cohort.covariates),
                                  cohort.phenotype_coding, data_use, tuple(per_variant),
                                  {k: v for k, v in task.parameters.items() if k not in _NOT_STATISTICS},
                                  shared))).digest()
    with np.errstate(over="ignore"):
        keys = _mix(np.full(task.n_variants, int.from_bytes(base[:8], "little"), dtype=np.uint64))
        keys = _mix(keys ^ task.variant_index.astype(np.int64).view(np.uint64))
        keys = _mix(keys ^ task.flip.astype(np.uint64))
        for name in per_variant:
            rows = np.ascontiguousarray(np.asarray(task.inputs[name], dtype=np.float64).reshape(task.n_variants, -1))
            for column in rows.view(np.uint64).T:
                keys = _mix(keys ^ column)
    return keys


def _participants(names: tuple[str, ...] | list[str]) -> str:
    return json.dumps(sorted(names))


class ReleaseRegistry:
    """The site's record of exact releases (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _connect(self) -> "closing[sqlite3.Connection]":
        connection = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        for statement in _SCHEMA:
            connection.execute(statement)
        return closing(connection)

    def _conflicts(self, connection: sqlite3.Connection, study: str, keys: np.ndarray,
                   participants: str) -> Iterator[tuple[str, int]]:
        for other, blob in connection.execute("SELECT participants, keys FROM releases WHERE study = ?", (study,)):
            if other == participants:
                continue
            shared = int(np.count_nonzero(np.isin(keys, np.frombuffer(blob, dtype=np.uint64))))
            if shared:
                yield other, shared

    def check_participants(self, site: str, study: str, keys: np.ndarray, participants: tuple[str, ...]) -> None:
        """Refuse (PrivacyError) statistics this site already released over another set of sites."""
        with self._connect() as connection:
            for other, shared in self._conflicts(connection, study, keys, _participants(participants)):
                raise PrivacyError(
                    f"site {site!r} already released {shared} of these statistics of study {study!r} over the sites "
                    f"{json.loads(other)}; recomputing them over {sorted(participants)} would reveal the difference "
                    f"(only a DP release, charged again, may be repeated)")

    def record_participants(self, site: str, study: str, keys: np.ndarray, participants: tuple[str, ...]) -> None:
        """Check again and record, in one exclusive transaction, an exact release over ``participants``."""
        names = _participants(participants)
        with self._connect() as connection:
            connection.execute("BEGIN IMMEDIATE")
            try:
                for other, shared in self._conflicts(connection, study, keys, names):
                    raise PrivacyError(f"site {site!r} already released {shared} of these statistics of study "
                                       f"{study!r} over the sites {json.loads(other)}")
                connection.execute("INSERT INTO releases VALUES (?, ?, ?)", (study, names, keys.tobytes()))
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")

    def check_samples(self, site: str, study: str, sample_index: np.ndarray, n_fam: int, min_difference: int,
                      record: bool = False) -> None:
        """Refuse an exact release of ``study`` over a sample set the study's pinned sets do not allow."""
        members = np.zeros(n_fam, dtype=bool)
        members[sample_index] = True
        packed = np.packbits(members).tobytes()
        digest = hashlib.sha256(packed + n_fam.to_bytes(8, "little")).hexdigest()
        with self._connect() as connection:
            connection.execute("BEGIN IMMEDIATE")
            try:
                rows = connection.execute("SELECT digest, n_fam, members FROM samples WHERE study = ?",
                                          (study,)).fetchall()
                if digest not in {row[0] for row in rows}:
                    if len(rows) >= MAX_SAMPLE_SETS:
                        raise PrivacyError(
                            f"site {site!r} refuses another sample set for study {study!r}: its exact releases already "
                            f"used {len(rows)} (at most {MAX_SAMPLE_SETS}, so that no inclusion-exclusion over "
                            f"cohorts isolates a participant); request a DP release instead")
                    for _, other_n, other in rows:
                        other_bits = np.unpackbits(np.frombuffer(other, dtype=np.uint8))[:other_n].astype(bool)
                        if other_n != n_fam:
                            continue
                        for side in (int(np.count_nonzero(members & ~other_bits)),
                                     int(np.count_nonzero(other_bits & ~members))):
                            if 0 < side < max(min_difference, 2):
                                raise PrivacyError(
                                    f"site {site!r} refuses a sample set for study {study!r} that differs from one "
                                    f"it released by {side} sample(s) on one side (minimum {max(min_difference, 2)}, "
                                    f"[access] min_cohort_difference)")
                    if record:
                        connection.execute("INSERT INTO samples VALUES (?, ?, ?, ?)", (study, digest, n_fam, packed))
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
