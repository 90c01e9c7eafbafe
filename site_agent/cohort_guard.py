"""Site-side defences against differencing, replays and rare-variant releases.

* **Differencing** (``[access] min_cohort_difference = D``): the site remembers the membership of every
  cohort it has admitted a task for (a bitset over its own sample file, kept at the site next to the
  ledger: sample IDs never leave it). A new cohort whose symmetric difference with any remembered
  cohort is between 1 and D-1 samples is refused: two releases over cohorts differing by a handful of
  participants would let their difference reveal those participants' statistics. Identical cohorts
  (every round of a study, or a study repeated) are allowed.
* **Replays** are refused at admission (engine/privacy/budget.py): a request id seen before in any
  state is refused in the same ledger transaction. Masks come from each round's fresh ephemeral keys.
  The study-level guards (same statistics over another set of sites; a study's sample sets) are in
  site_agent/release_registry.py.
* **Minimum allele count** (``[access] min_allele_count = K``, exact releases only: a DP release is
  never suppressed before its noise): for each variant whose minor allele count among this site's
  analysed samples is below K, the site contributes an all-zero row, exactly
  as if it had no observed sample at that variant. The decision uses only the site's own data, so it
  needs nothing from other sites; under secure aggregation the coordinator sees only the sum, in which
  the abstention shows only through the pooled sample count of that variant (one bit: "this site's
  count is below K"), never a genotype.
"""

from __future__ import annotations

import hashlib
import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np

from engine.errors import PrivacyError
from engine.io.plink import MISSING_INT8

_SCHEMA = "CREATE TABLE IF NOT EXISTS cohorts (digest TEXT PRIMARY KEY, n_fam INTEGER NOT NULL, members BLOB NOT NULL)"


def registry_path(ledger: Path) -> Path:
    """Where a site keeps its released cohorts: beside its ledger."""
    return ledger.with_name(ledger.stem + ".cohorts.sqlite")


def check_and_record_cohort(path: Path, site: str, sample_index: np.ndarray, n_fam: int, min_difference: int) -> None:
    """Refuse (PrivacyError) a cohort within ``min_difference`` - 1 samples of a remembered one; else remember it.

    The check and the insertion are one exclusive transaction, so two concurrent tasks cannot both
    pass against an empty registry.
    """
    members = np.zeros(n_fam, dtype=bool)
    members[sample_index] = True
    packed = np.packbits(members).tobytes()
    digest = hashlib.sha256(packed + n_fam.to_bytes(8, "little")).hexdigest()
    with closing(sqlite3.connect(path, timeout=60.0, isolation_level=None)) as connection:
        connection.execute(_SCHEMA)
        connection.execute("BEGIN IMMEDIATE")
        try:
            if min_difference > 1:
                for other_digest, other_n, other in connection.execute("SELECT digest, n_fam, members FROM cohorts"):
                    if other_digest == digest or other_n != n_fam:
                        continue
                    other_bits = np.unpackbits(np.frombuffer(other, dtype=np.uint8))[:n_fam].astype(bool)
                    differ = int(np.count_nonzero(other_bits != members))
                    if 0 < differ < min_difference:
                        raise PrivacyError(
                            f"site {site!r} refuses a cohort that differs from one it already released by {differ} "
                            f"sample(s): its minimum is {min_difference} ([access] min_cohort_difference), "
                            f"so that no two releases isolate a few participants")
            connection.execute("INSERT OR IGNORE INTO cohorts VALUES (?, ?, ?)", (digest, n_fam, packed))
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")


def suppress_rare(values: np.ndarray, genotypes: np.ndarray, min_allele_count: int) -> np.ndarray:
    """``values`` ``(m, width)`` with the rows of variants whose minor allele count is below the minimum zeroed.

    ``genotypes`` ``(n_samples, m)`` int8 allele counts, ``MISSING_INT8`` for missing calls, or float
    dosages with NaN for missing (the minor allele count is then the dosage sum).
    """
    if min_allele_count <= 0:
        return values
    observed = np.isfinite(genotypes) if genotypes.dtype.kind == "f" else genotypes != MISSING_INT8
    alt = np.where(observed, genotypes, 0).sum(axis=0, dtype=np.float64)  # dosages: the expected count
    mac = np.minimum(alt, 2 * observed.sum(axis=0, dtype=np.int64) - alt)
    rare = mac < min_allele_count
    if not rare.any():
        return values
    out = np.array(values, copy=True)
    out[rare] = 0
    return out
