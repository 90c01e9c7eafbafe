"""What the study simulator is asked for (:class:`SimulationSpec`, validated) and what it wrote (:class:`SimulatedStudy`).

The simulation itself is :mod:`engine.simulate`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import InputError

#: Covariate columns of ``covar.txt``, in file order.
COVARIATE_NAMES: tuple[str, ...] = ("SEX_MALE", "AGE", "BMI", "SMOKER", "ANC1")
#: Phenotype columns of ``pheno.txt``, in file order.
PHENOTYPE_NAMES: tuple[str, ...] = ("QT", "BT")
#: Per-site missing-call rates used when ``SimulationSpec.missing_rates`` is None (cycled).
DEFAULT_MISSING_RATES: tuple[float, ...] = (0.005, 0.01, 0.02)


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value: object) -> bool:
    return _is_int(value) or isinstance(value, (float, np.floating))


@dataclass(frozen=True)
class SimulationSpec:
    """Everything that determines a simulated study (and hence its files, byte for byte).

    Attributes
    ----------
    site_sizes
        Samples per site, e.g. ``(3333, 3333, 3334)``.
    n_variants
        Number of variants (shared by all sites, same order).
    n_populations
        Number of sampling clusters ("populations") along the ancestry axis ANC1.
    fst
        Wright's F_ST between each of the two source populations (ANC1 = -1 and +1) and the
        ancestral population, in (0, 1).
    n_causal
        Causal variants for both phenotypes (0 requires ``heritability == 0``).
    heritability
        Variance of the genetic component of the liability, in [0, 1); noise variance is 1 - it.
    missing_rates
        Per-site missing-call rates in [0, 1); None cycles :data:`DEFAULT_MISSING_RATES`.
    seed
        Non-negative seed of every random stream.
    n_chromosomes
        Autosomes 1..n_chromosomes (at most 22) over which the variants are spread evenly.
    block_size
        Variants generated and written per block (peak memory ~ 6 bytes x n_samples x block_size).
        Part of the seeded stream: a different block size gives different genotypes.
    write_pooled
        Also write ``pooled.bed/.bim/.fam`` with every sample (site order).
    case_fraction
        Share of cases in ``BT``, in (0, 1).
    """

    site_sizes: tuple[int, ...]
    n_variants: int
    n_populations: int = 3
    fst: float = 0.05
    n_causal: int = 20
    heritability: float = 0.2
    missing_rates: tuple[float, ...] | None = None
    seed: int = 1
    n_chromosomes: int = 22
    block_size: int = 4096
    write_pooled: bool = True
    case_fraction: float = 0.3

    def __post_init__(self) -> None:
        for name in ("site_sizes", "missing_rates"):
            value = getattr(self, name)
            if isinstance(value, (list, np.ndarray)):
                object.__setattr__(self, name, tuple(value.tolist() if isinstance(value, np.ndarray) else value))
        self._validate()

    def _fail(self, name: str, requirement: str) -> InputError:
        return InputError(f"SimulationSpec.{name} must be {requirement}, got {getattr(self, name)!r}")

    def _validate(self) -> None:
        sizes = self.site_sizes
        if not isinstance(sizes, tuple) or not sizes or not all(_is_int(s) and s >= 1 for s in sizes):
            raise self._fail("site_sizes", "a non-empty tuple of positive integers")
        for name, low in (("n_variants", 1), ("n_populations", 1), ("n_causal", 0), ("seed", 0), ("block_size", 1)):
            value = getattr(self, name)
            if not _is_int(value) or value < low:
                raise self._fail(name, f"an integer >= {low}")
        if self.n_causal > self.n_variants:
            raise self._fail("n_causal", f"at most n_variants ({self.n_variants})")
        if not _is_int(self.n_chromosomes) or not 1 <= self.n_chromosomes <= 22:
            raise self._fail("n_chromosomes", "an integer in 1..22 (autosomes)")
        for name, low_open in (("fst", True), ("heritability", False), ("case_fraction", True)):
            value = getattr(self, name)
            in_range = _is_real(value) and (0 < value < 1 if low_open else 0 <= value < 1)
            if not in_range:
                raise self._fail(name, "a number in (0, 1)" if low_open else "a number in [0, 1)")
        if self.n_causal == 0 and self.heritability > 0:
            raise self._fail("heritability", "0 when n_causal is 0")
        rates = self.missing_rates
        if rates is not None:
            if not isinstance(rates, tuple) or len(rates) != len(sizes):
                raise self._fail("missing_rates", f"None or a tuple of {len(sizes)} rates (one per site)")
            if not all(_is_real(r) and 0 <= r < 1 for r in rates):
                raise self._fail("missing_rates", "rates in [0, 1)")
        if not isinstance(self.write_pooled, (bool, np.bool_)):
            raise self._fail("write_pooled", "a bool")

    @property
    def n_sites(self) -> int:
        return len(self.site_sizes)

    @property
    def n_samples(self) -> int:
        return sum(self.site_sizes)

    @property
    def site_missing_rates(self) -> tuple[float, ...]:
        """Missing-call rate of each site, shape ``(n_sites,)`` (the defaults filled in)."""
        if self.missing_rates is not None:
            return tuple(float(r) for r in self.missing_rates)
        return tuple(DEFAULT_MISSING_RATES[k % len(DEFAULT_MISSING_RATES)] for k in range(self.n_sites))


@dataclass(frozen=True)
class SimulatedStudy:
    """Paths of a simulated study's files.

    ``site_bfiles`` and ``pooled_bfile`` are PLINK prefixes without extension; ``pooled_bfile`` is
    None unless ``SimulationSpec.write_pooled``.
    """

    out_dir: Path
    site_bfiles: tuple[Path, ...]
    pooled_bfile: Path | None
    pheno_path: Path
    covar_path: Path
    causal_path: Path
    covariate_names: tuple[str, ...] = COVARIATE_NAMES
    phenotype_names: tuple[str, ...] = PHENOTYPE_NAMES
