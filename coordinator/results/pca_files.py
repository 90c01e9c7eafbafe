"""Population-structure outputs in PLINK 2's formats: ``.prune.in``/``.prune.out``, ``.eigenval``,
``.eigenvec.var``.

* ``fedgwas.prune.in`` / ``fedgwas.prune.out``: one variant ID per line (``--indep-pairwise``);
* ``pca.eigenval``: one eigenvalue per line, 6 significant digits;
* ``pca.eigenvec.var``: ``#CHROM ID MAJ NONMAJ PC1 .. PCk`` (``--pca biallelic-var-wts``), the variant
  weights ``Z'u / sqrt(lambda)`` signed as PLINK 2 prints them (for the non-major allele's standardised
  count), MAJ the major allele by PLINK 2's rule.

The sample eigenvectors (``.eigenvec``) are not here: each site wrote its own rows next to its
config, and they stay there (:mod:`site_agent.scores`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from coordinator.results.qc_files import _floats, _table, _variant_columns, _write_atomic
from engine.stats.association import VariantTable
from engine.stats.pca.solve import PcaResult


def write_prune_lists(out_dir: Path, stem: str, variants: VariantTable, removed: np.ndarray,
                      processed: np.ndarray) -> tuple[Path, Path]:
    """``STEM.prune.in`` (kept) and ``STEM.prune.out`` (removed); variants outside ``processed``
    (PLINK skips chromosome 0) are in neither."""
    _, ids, _, _ = _variant_columns(variants)
    kept = [i for i, keep in zip(ids, processed & ~removed) if keep]
    dropped = [i for i, drop in zip(ids, processed & removed) if drop]
    paths = (out_dir / f"{stem}.prune.in", out_dir / f"{stem}.prune.out")
    for path, names in zip(paths, (kept, dropped)):
        _write_atomic(path, "".join(f"{name}\n" for name in names))
    return paths


def write_eigenval(path: Path, result: PcaResult) -> Path:
    """PLINK 2 ``.eigenval``: one eigenvalue per line."""
    return _write_atomic(path, "".join(f"{value}\n" for value in _floats(result.eigenvalues, 6, "nan")))


def write_eigenvec_var(path: Path, variants: VariantTable, result: PcaResult, major_is_effect: np.ndarray) -> Path:
    """PLINK 2 ``.eigenvec.var`` (``biallelic-var-wts``): weights w.r.t. the major allele as PLINK
    prints them, i.e. the effect-allele weight negated where the effect allele is major."""
    chrom, ids, other, effect = _variant_columns(variants)
    major = [e if is_effect else o for e, o, is_effect in zip(effect, other, major_is_effect)]
    minor = [o if is_effect else e for e, o, is_effect in zip(effect, other, major_is_effect)]
    weights = result.loadings * np.where(major_is_effect, -1.0, 1.0)[:, None]
    k = weights.shape[1]
    header = ["#CHROM", "ID", "MAJ", "NONMAJ", *(f"PC{i + 1}" for i in range(k))]
    return _table(path, header, [chrom, ids, major, minor, *(_floats(weights[:, i], 6, "nan") for i in range(k))])
