"""The one seeded study simulator shared by the demo, the tests and the benchmarks.

:func:`simulate_study` writes a multi-site GWAS with known truth: per-site PLINK 1 filesets (and
optionally the pooled fileset), a phenotype file (quantitative ``QT`` and binary ``BT``), a covariate
file and the causal variants with their effects. Same :class:`SimulationSpec` -> byte-identical files.

Model
-----
* Ancestry (two-way admixture on a line): two source populations A and B, each drawn
  Balding-Nichols from an ancestral allele1 frequency ``p ~ U(0.05, 0.95)``:
  ``f_A, f_B ~ Beta(p (1 - F) / F, (1 - p)(1 - F) / F)`` independently (``F = fst``), clipped to
  [0.001, 0.999]. A sample with B-ancestry share ``q`` has allele1 frequency
  ``f(q) = (1 - q) f_A + q f_B``. ``q`` lives on the grid ``0, 1/200, ..., 1`` and is written exactly
  as ``ANC1 = 2 q - 1`` (in [-1, 1], a multiple of 0.01).
* Sampling clusters ("populations"): a sample of population ``k`` has
  ``q ~ Beta(30 c_k, 30 (1 - c_k))`` rounded to the grid, with centres ``c_k`` evenly spaced over
  [0.1, 0.9] (0.5 for a single population). A sample of site ``k`` (0-based) comes from population
  ``k % n_populations`` with probability 0.75, else from a population drawn with the site's random
  (flat Dirichlet) mixture weights.
* Genotypes: Binomial(2, f(q)) at the sample's ancestry, drawn by inverse CDF from one 32-bit
  uniform per call (same law as the sum of two Bernoulli draws, half the random numbers); missing
  calls (-127) injected independently at the site's rate (exact Bernoulli, via geometric gaps).
* Covariates: SEX_MALE, AGE (uniform 20-70, one decimal, 0.5 % NA rounded up), BMI, SMOKER, ANC1.
* ``QT = 0.25 ANC1 + 0.2 SEX_MALE + 0.01 (AGE - 45) + D + e``, where
  ``D = sum_j b_j (g_j - 2 f_j(q))`` over the causal variants ``j`` (a missing call adds 0) is the
  genetic value minus its expectation at the sample's ancestry, so ``b`` is a within-ancestry effect.
  ``b`` is scaled so that ``Var(G b) = heritability`` over all samples (missing calls at the column
  mean; ``Var(D)`` is a little smaller, as it leaves out what ancestry explains) and
  ``e ~ N(0, 1 - heritability)``, independent of everything else.
  ``BT``: the same liability with fresh noise; the top ``case_fraction`` are cases (2), others 1.
  0.5 % (rounded up; none below 10 samples) of each phenotype is NA, drawn independently.

Why this is calibrated: the expected genotype of every variant, ``2 f(q)``, and the phenotype's
ancestry effect ``0.25 ANC1`` are both *linear in ANC1*, and ``E[D | ANC1] = 0``. A scan adjusted for
ANC1 (with an intercept) therefore removes all of the ancestry-driven covariance, and what is left of
each genotype is independent across samples and of the phenotype residual: lambda_GC ~ 1 on
non-causal variants, in every simulated study. Unadjusted scans see ancestry move both allele
frequencies and the phenotype mean, so they are inflated (stratification). An earlier model used
discrete Balding-Nichols populations and ``ANC1 = axis[k] + N(0, 0.5^2)``: one covariate cannot span
the population contrasts of the genotypes (3 populations give 2), so the *realised* population means
of the noise ``e`` (one chi-square draw per study, whatever its size) were shared by every variant
and moved that study's lambda_GC by an amount proportional to F_ST and to the draw: 1.27 for
3 x 2000 samples at seed 7, 0.97-1.06 at other seeds.

Genotypes are generated, packed and written one block of variants at a time, so memory is
``O(n_samples * block_size)``, never ``O(n_samples * n_variants)``.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.io.bed_writer import MISSING_INT8, BedWriter, write_bim, write_fam
from engine.errors import InputError

#: Covariate columns of ``covar.txt``, in file order.
COVARIATE_NAMES: tuple[str, ...] = ("SEX_MALE", "AGE", "BMI", "SMOKER", "ANC1")
#: Phenotype columns of ``pheno.txt``, in file order.
PHENOTYPE_NAMES: tuple[str, ...] = ("QT", "BT")
#: Per-site missing-call rates used when ``SimulationSpec.missing_rates`` is None (cycled).
DEFAULT_MISSING_RATES: tuple[float, ...] = (0.005, 0.01, 0.02)

_NA = "NA"
_NA_RATE = 0.005  # share of NA values in AGE, QT and BT
_MAIN_POPULATION_SHARE = 0.75  # share of a site's samples from its own population
_ANCESTRY_EFFECT = 0.25  # phenotype change per unit of ANC1 (ANC1 = 2 q - 1 spans [-1, 1])
_ANCESTRY_STEPS = 200  # B-ancestry share q lives on the grid 0, 1/200, ..., 1 (ANC1 step 0.01)
_CLUSTER_CENTRES = (0.1, 0.9)  # range of the populations' mean q
_CLUSTER_CONCENTRATION = 30.0  # q ~ Beta(30 c_k, 30 (1 - c_k)) within population k
_CHROMOSOME_LENGTH = 100_000_000  # approximate span of each simulated chromosome, bp
_ALLELES = np.array(["A", "C", "G", "T"])
_STREAMS = ("samples", "variants", "genotypes", "missing", "phenotypes")


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


@dataclass(frozen=True)
class _Samples:
    """Per-sample truth, shapes ``(n_samples,)`` in site order."""

    population: np.ndarray  # int64, sampling cluster 0..n_populations-1
    ancestry_level: np.ndarray  # int64, q * _ANCESTRY_STEPS in 0.._ANCESTRY_STEPS (q: B-ancestry share)
    sex_male: np.ndarray  # int8 0/1
    age: np.ndarray  # float64, true value (also used when written as NA)
    age_missing: np.ndarray  # bool
    bmi: np.ndarray  # float64
    smoker: np.ndarray  # int8 0/1
    anc1: np.ndarray  # float64, 2 q - 1 (exactly the value written)


@dataclass(frozen=True)
class _Variants:
    """Per-variant truth, shapes ``(n_variants,)`` unless noted."""

    chrom: np.ndarray  # int64, 1..n_chromosomes
    pos: np.ndarray  # int64, increasing within a chromosome
    variant_id: np.ndarray  # str
    allele1: np.ndarray  # str, the counted allele
    allele2: np.ndarray  # str
    source_freq: np.ndarray  # float64, (n_variants, 2), allele1 frequency in source populations A, B
    causal_index: np.ndarray  # int64, (n_causal,), sorted
    causal_raw_effect: np.ndarray  # float64, (n_causal,), before scaling to the heritability


def _na_mask(rng: np.random.Generator, n: int) -> np.ndarray:
    """Boolean mask, shape ``(n,)``, with exactly ``min(ceil(0.5 % n), n // 10)`` NA entries.

    A fixed count (rather than Bernoulli draws) guarantees that even a small test study has NAs.
    """
    mask = np.zeros(n, dtype=bool)
    mask[rng.choice(n, size=min(int(np.ceil(_NA_RATE * n)), n // 10), replace=False)] = True
    return mask


def _simulate_samples(spec: SimulationSpec, rng: np.random.Generator) -> _Samples:
    n_pop = spec.n_populations
    populations = []
    for site, size in enumerate(spec.site_sizes):  # one iteration per site, not per sample
        mixture = (1 - _MAIN_POPULATION_SHARE) * rng.dirichlet(np.ones(n_pop))
        mixture[site % n_pop] += _MAIN_POPULATION_SHARE
        populations.append(rng.choice(n_pop, size=size, p=mixture))
    population = np.concatenate(populations)
    n = len(population)
    centre = np.linspace(*_CLUSTER_CENTRES, n_pop) if n_pop > 1 else np.full(1, 0.5)
    share = rng.beta(_CLUSTER_CONCENTRATION * centre[population], _CLUSTER_CONCENTRATION * (1 - centre[population]))
    level = np.rint(share * _ANCESTRY_STEPS).astype(np.int64)
    half = _ANCESTRY_STEPS // 2
    return _Samples(
        population=population,
        ancestry_level=level,
        sex_male=(rng.random(n) < 0.5).astype(np.int8),
        age=np.round(rng.uniform(20.0, 70.0, n), 1),
        age_missing=_na_mask(rng, n),
        bmi=np.round(rng.normal(27.0, 4.0, n), 1),
        smoker=(rng.random(n) < 0.2).astype(np.int8),
        anc1=(level - half) / half,  # the double nearest the two-decimal value written
    )


def _simulate_variants(spec: SimulationSpec, rng: np.random.Generator) -> _Variants:
    m, n_chrom = spec.n_variants, spec.n_chromosomes
    chrom = 1 + (np.arange(m) * n_chrom) // m
    mean_gap = max(2, min(_CHROMOSOME_LENGTH, _CHROMOSOME_LENGTH * n_chrom // m))
    gaps = rng.integers(1, 2 * mean_gap, m)
    ends = np.cumsum(gaps)
    first = np.flatnonzero(np.diff(chrom, prepend=0))
    offset = np.repeat(ends[first] - gaps[first], np.diff(np.append(first, m)))
    pos = 10_000 + ends - offset
    rs_number = 1_000 + np.cumsum(rng.integers(1, 100, m))
    allele1 = rng.integers(0, 4, m)
    allele2 = (allele1 + rng.integers(1, 4, m)) % 4
    ancestral = rng.uniform(0.05, 0.95, m)[:, None]
    scale = (1 - spec.fst) / spec.fst
    freq = rng.beta(ancestral * scale, (1 - ancestral) * scale, size=(m, 2))
    causal = np.sort(rng.choice(m, size=spec.n_causal, replace=False))
    return _Variants(
        chrom=chrom,
        pos=pos,
        variant_id=np.char.add("rs", rs_number.astype(str)),
        allele1=_ALLELES[allele1],
        allele2=_ALLELES[allele2],
        source_freq=np.clip(freq, 0.001, 0.999),
        causal_index=causal.astype(np.int64),
        causal_raw_effect=rng.normal(0.0, 1.0, spec.n_causal),
    )


def _missing_positions(rng: np.random.Generator, size: int, rate: float) -> np.ndarray:
    """Flat indices in ``[0, size)`` of independent Bernoulli(rate) events, via geometric gaps.

    Exact (gaps between successes of a Bernoulli process are Geometric(rate)) and O(size * rate)
    instead of one uniform per call.
    """
    if rate <= 0 or size == 0:
        return np.empty(0, dtype=np.int64)
    chunk = int(size * rate + 6 * np.sqrt(size * rate) + 16)
    positions = np.cumsum(rng.geometric(rate, chunk)) - 1
    while positions[-1] < size:  # rare: draw further gaps until past the end
        positions = np.concatenate([positions, positions[-1] + np.cumsum(rng.geometric(rate, chunk))])
    return positions[: np.searchsorted(positions, size)]


def _uniform_u32(bits: np.random.BitGenerator, shape: tuple[int, int]) -> np.ndarray:
    """Uniform uint32 draws of ``shape`` from the raw 64-bit output (two per word; ~2x rng.random f32)."""
    size = shape[0] * shape[1]
    return bits.random_raw((size + 1) // 2).view(np.uint32)[:size].reshape(shape)


def _ancestry_freq(source_freq: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Allele1 frequency ``(1 - q) f_A + q f_B`` at ``q = levels / _ANCESTRY_STEPS``.

    ``source_freq`` has shape ``(m, 2)`` (columns A, B) and ``levels`` ``(g,)``; returns ``(g, m)``,
    C order.
    """
    share = (levels / _ANCESTRY_STEPS)[:, None]
    freq: np.ndarray = source_freq[:, 0] + share * (source_freq[:, 1] - source_freq[:, 0])
    return freq


def _genotype_block(
    freq: np.ndarray,
    group_rows: Sequence[np.ndarray],
    group_bits: Sequence[np.random.BitGenerator],
    n_samples: int,
) -> np.ndarray:
    """Draw genotypes (count of allele1) for one block of variants.

    Parameters
    ----------
    freq
        Allele1 frequency of each group of samples (an ancestry level), float64, C order, shape
        ``(n_groups, m)``.
    group_rows
        Row indices of each group's samples, shapes ``(n_g,)``.
    group_bits
        One bit generator per group (its raw stream is stable across numpy versions).

    Returns
    -------
    numpy.ndarray
        int8, C order, shape ``(n_samples, m)``, values in {0, 1, 2}.

    Notes
    -----
    Inverse CDF of Binomial(2, f) from one 32-bit uniform ``u`` per call:
    ``g = [u < 1 - (1 - f)^2] + [u < f^2]``, so P(g = 2) = f^2 and P(g = 1) = 2 f (1 - f) up to
    2^-32 (finer than float32's 2^-24), with half the random words of two Bernoulli draws.
    """
    scale = 2.0**32
    # (n_groups, m), C order: each group's thresholds are one contiguous row
    at_least_one = np.minimum(np.floor((1.0 - (1.0 - freq) ** 2) * scale), scale - 1).astype(np.uint32)
    two = np.floor(freq * freq * scale).astype(np.uint32)
    block = np.empty((n_samples, freq.shape[1]), dtype=np.int8)
    for k, (rows, bits) in enumerate(zip(group_rows, group_bits)):  # per ancestry level, not per sample
        uniform = _uniform_u32(bits, (rows.size, freq.shape[1]))
        counts = np.less(uniform, at_least_one[k]).view(np.int8)
        counts += np.less(uniform, two[k]).view(np.int8)
        block[rows] = counts
    return block


def _write_genotypes(
    spec: SimulationSpec,
    variants: _Variants,
    ancestry_level: np.ndarray,
    bed_paths: list[Path],
    pooled_bed: Path | None,
    seeds: dict[str, np.random.SeedSequence],
) -> np.ndarray:
    """Generate and write every block; return the causal genotype columns, (n_samples, n_causal) int8."""
    n = spec.n_samples
    bounds = np.concatenate([[0], np.cumsum(spec.site_sizes)])
    levels, counts = np.unique(ancestry_level, return_counts=True)
    order = np.argsort(ancestry_level, kind="stable")
    group_rows = np.split(order, np.cumsum(counts)[:-1])  # rows of each ancestry level present
    level_seeds = seeds["genotypes"].spawn(_ANCESTRY_STEPS + 1)  # one stream per level, used or not
    group_bits = [np.random.PCG64(level_seeds[level]) for level in levels]
    site_rngs = [np.random.default_rng(s) for s in seeds["missing"].spawn(spec.n_sites)]
    rates = spec.site_missing_rates
    causal = np.empty((n, spec.n_causal), dtype=np.int8)
    writers = [BedWriter(path, size) for path, size in zip(bed_paths, spec.site_sizes)]
    if pooled_bed is not None:
        writers.append(BedWriter(pooled_bed, n))
    try:
        for start in range(0, spec.n_variants, spec.block_size):
            stop = min(start + spec.block_size, spec.n_variants)
            freq = _ancestry_freq(variants.source_freq[start:stop], levels)
            block = _genotype_block(freq, group_rows, group_bits, n)
            flat = block.reshape(-1)  # a view: block is C-contiguous and each site's rows are contiguous
            for site in range(spec.n_sites):
                hits = _missing_positions(site_rngs[site], spec.site_sizes[site] * (stop - start), rates[site])
                flat[bounds[site] * (stop - start) + hits] = MISSING_INT8
                writers[site].write_block(block[bounds[site] : bounds[site + 1]])
            if pooled_bed is not None:
                writers[-1].write_block(block)
            lo, hi = np.searchsorted(variants.causal_index, [start, stop])
            causal[:, lo:hi] = block[:, variants.causal_index[lo:hi] - start]
    finally:
        for writer in writers:
            writer.close()
    return causal


def _scaled_effects(causal: np.ndarray, raw_effect: np.ndarray, heritability: float) -> np.ndarray:
    """Effects ``b``, shape ``(n_causal,)``, with ``Var(G b) = heritability`` on these genotypes."""
    dosage = causal.astype(np.float64)
    missing = causal == MISSING_INT8
    dosage[missing] = np.nan
    column_mean = np.nan_to_num(np.nanmean(dosage, axis=0)) if dosage.size else np.zeros(causal.shape[1])
    dosage = np.where(missing, column_mean, dosage)
    genetic = dosage @ raw_effect
    variance = float(genetic.var()) if genetic.size else 0.0
    factor = np.sqrt(heritability / variance) if variance > 0 else 0.0
    effects: np.ndarray = raw_effect * factor
    return effects


def _genetic_deviation(causal: np.ndarray, effects: np.ndarray, variants: _Variants, samples: _Samples) -> np.ndarray:
    """``D = sum_j b_j (g_j - 2 f_j(q))``, shape ``(n_samples,)``: genetic value minus its expectation.

    ``causal`` is int8 ``(n_samples, n_causal)``; a missing call adds 0. ``E[D | ANC1] = 0``, so the
    causal variants' own ancestry differences add no ancestry signal beyond ``0.25 ANC1``.
    """
    expected = 2.0 * _ancestry_freq(variants.source_freq[variants.causal_index], samples.ancestry_level)
    deviation = np.where(causal == MISSING_INT8, 0.0, causal - expected)
    genetic: np.ndarray = deviation @ effects
    return genetic


def _phenotypes(
    spec: SimulationSpec, samples: _Samples, genetic_deviation: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """QT and BT as text columns, shapes ``(n_samples,)`` (``NA`` where missing; BT 2 case, 1 control)."""
    n = spec.n_samples
    mean = _ANCESTRY_EFFECT * samples.anc1 + 0.2 * samples.sex_male + 0.01 * (samples.age - 45.0)
    mean += genetic_deviation
    noise_sd = np.sqrt(1.0 - spec.heritability)
    qt = mean + rng.normal(0.0, noise_sd, n)
    liability = mean + rng.normal(0.0, noise_sd, n)
    n_cases = int(round(spec.case_fraction * n))
    bt = np.ones(n, dtype=np.int64)
    bt[np.argsort(liability, kind="stable")[n - n_cases :]] = 2
    return _format(qt, "%.6f", _na_mask(rng, n)), _format(bt, "%d", _na_mask(rng, n))


def _format(values: np.ndarray, fmt: str, missing: np.ndarray | None = None) -> np.ndarray:
    text: np.ndarray = np.char.mod(fmt, values)
    return text if missing is None else np.where(missing, _NA, text)


def _write_table(path: Path, header: tuple[str, ...], columns: list[np.ndarray]) -> None:
    lines = ["\t".join(header)] + ["\t".join(row) for row in zip(*(c.tolist() for c in columns))]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _write_fam_bim(
    site_bfiles: tuple[Path, ...], pooled_bfile: Path | None, spec: SimulationSpec, samples: _Samples, variants: _Variants
) -> tuple[np.ndarray, np.ndarray]:
    """Write every .fam and .bim; return (FID, IID), shapes ``(n_samples,)`` in site order."""
    site_number = np.repeat(np.arange(1, spec.n_sites + 1), spec.site_sizes).astype(str)
    within = np.concatenate([np.arange(1, size + 1) for size in spec.site_sizes]).astype(str)
    fid = np.char.add("site", site_number)
    iid = np.char.add(np.char.add(np.char.add("s", site_number), "_"), np.char.zfill(within, 6))
    sex = np.where(samples.sex_male == 1, 1, 2)
    bounds = np.cumsum((0,) + spec.site_sizes)
    for k, prefix in enumerate(site_bfiles):
        rows = slice(bounds[k], bounds[k + 1])
        write_fam(prefix.with_suffix(".fam"), fid[rows], iid[rows], sex[rows])
    if pooled_bfile is not None:
        write_fam(pooled_bfile.with_suffix(".fam"), fid, iid, sex)
    bims = [p.with_suffix(".bim") for p in site_bfiles + ((pooled_bfile,) if pooled_bfile is not None else ())]
    write_bim(bims[0], variants.chrom, variants.variant_id, variants.pos, variants.allele1, variants.allele2)
    for path in bims[1:]:
        shutil.copyfile(bims[0], path)
    return fid, iid


def simulate_study(spec: SimulationSpec, out_dir: Path) -> SimulatedStudy:
    """Simulate a multi-site study and write its files under ``out_dir`` (created if needed).

    Parameters
    ----------
    spec
        The study design; its seed fixes every random draw.
    out_dir
        Output folder; existing files of the same names are overwritten.

    Returns
    -------
    SimulatedStudy
        Paths of ``site{k}.bed/.bim/.fam`` (k = 1..n_sites, FID ``site{k}``, IID ``s{k}_{i:06d}``
        with i = 1..n_k), ``pooled.*`` (if requested; samples in site order), ``pheno.txt``
        (``#FID IID QT BT``), ``covar.txt`` (``#FID IID`` + :data:`COVARIATE_NAMES`) and
        ``causal.txt`` (``ID EFFECT``: effect per copy of allele1, .bim column 5).
    """
    if not isinstance(spec, SimulationSpec):
        raise InputError(f"spec must be a SimulationSpec, got {type(spec).__name__}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    study = SimulatedStudy(
        out_dir=out_dir,
        site_bfiles=tuple(out_dir / f"site{k}" for k in range(1, spec.n_sites + 1)),
        pooled_bfile=out_dir / "pooled" if spec.write_pooled else None,
        pheno_path=out_dir / "pheno.txt",
        covar_path=out_dir / "covar.txt",
        causal_path=out_dir / "causal.txt",
    )
    seeds = dict(zip(_STREAMS, np.random.SeedSequence(spec.seed).spawn(len(_STREAMS))))
    samples = _simulate_samples(spec, np.random.default_rng(seeds["samples"]))
    variants = _simulate_variants(spec, np.random.default_rng(seeds["variants"]))
    fid, iid = _write_fam_bim(study.site_bfiles, study.pooled_bfile, spec, samples, variants)
    causal = _write_genotypes(
        spec,
        variants,
        samples.ancestry_level,
        [p.with_suffix(".bed") for p in study.site_bfiles],
        study.pooled_bfile.with_suffix(".bed") if study.pooled_bfile is not None else None,
        seeds,
    )
    effects = _scaled_effects(causal, variants.causal_raw_effect, spec.heritability)
    deviation = _genetic_deviation(causal, effects, variants, samples)
    qt, bt = _phenotypes(spec, samples, deviation, np.random.default_rng(seeds["phenotypes"]))

    _write_table(study.pheno_path, ("#FID", "IID") + PHENOTYPE_NAMES, [fid, iid, qt, bt])
    covariates = [
        _format(samples.sex_male, "%d"),
        _format(samples.age, "%.1f", samples.age_missing),
        _format(samples.bmi, "%.1f"),
        _format(samples.smoker, "%d"),
        _format(samples.anc1, "%.4f"),
    ]
    _write_table(study.covar_path, ("#FID", "IID") + COVARIATE_NAMES, [fid, iid, *covariates])
    causal_ids = variants.variant_id[variants.causal_index]
    _write_table(study.causal_path, ("ID", "EFFECT"), [causal_ids, _format(effects, "%.10g")])
    return study
