"""Sex chromosomes in association tests, as PLINK 2 (v2.00a3.5) ``--glm`` codes them.

Measured against ``plink2 --glm`` on the pooled data (tests/federated/test_sex_chromosomes.py):

* **chrX** (outside the pseudo-autosomal regions; PLINK names the PARs ``XY``, which stay diploid):
  PLINK 2's default ``--xchr-model 2`` codes males' calls 0/2 like females' (so the genotype column
  is the .bed's allele count) and adds the .fam sex as a covariate, which leaves out samples of unknown
  sex. ``no-x-sex`` drops that covariate (everyone analysed); ``--xchr-model 0`` skips chrX.
  ``--xchr-model 1`` codes males' calls 0/1 (sex covariate as in model 2): the site halves males'
  allele counts on chrX before the statistic (:func:`haploid_males_on_x`; a heterozygous male call
  becomes 0.5, as PLINK 2 reads it).
* **chrY**: males only (other samples' calls count as missing), haploid dosage ``g / 2``.
* **MT**: every sample, haploid dosage ``g / 2`` (a heterozygous call is 0.5, as PLINK 2 reads it).

Halving the dosage doubles beta and its SE and leaves the test unchanged, so chrY and MT variants
are fitted on the allele count ``g`` and their beta and SE are multiplied by :data:`HAPLOID_SCALE` at
the coordinator (also for logistic and Firth regression: a linear reparametrisation of one predictor;
Firth's penalty is invariant to it). The site applies the chrY rule itself, from its own .fam
(:func:`males_only_on_y`); the chrX sex covariate is the reserved covariate :data:`FAM_SEX_COVARIATE`,
which each site fills from its .fam (1 male, 0 female, missing when unknown).
"""

from __future__ import annotations

import numpy as np

from engine.cohort.harmonise import normalise_chromosome

#: Reserved covariate name: the .fam sex (1 = male, 0 = female, unknown = missing), added on chrX.
FAM_SEX_COVARIATE = "@FAM_SEX"
#: Beta and SE factor of haploid chromosomes (PLINK 2's dosage g / 2).
HAPLOID_SCALE = 2.0
#: ``--xchr-model`` values (PLINK 2's, whose default is 2): 0 skip chrX, 1 males 0/1, 2 males 0/2.
XCHR_MODELS = (0, 1, 2)
#: Chromosome classes.
AUTOSOMAL, X, Y, MT = "autosomal", "X", "Y", "MT"


def chromosome_class(chrom: np.ndarray) -> np.ndarray:
    """Class of each variant's chromosome, ``(m,)`` str: ``X`` (non-PAR), ``Y``, ``MT`` or ``autosomal``
    (autosomes, the pseudo-autosomal ``XY`` and anything else, which PLINK treats as diploid)."""
    names, inverse = np.unique(np.asarray(chrom).astype(str), return_inverse=True)
    normal = normalise_chromosome(names)
    classes = np.array([c if c in (X, Y, MT) else AUTOSOMAL for c in normal.tolist()], dtype=object)
    return classes[inverse.reshape(-1)].astype(str) if len(names) else np.empty(0, dtype=str)


def fam_sex_covariate(sex: np.ndarray) -> np.ndarray:
    """The .fam sex codes ``(n,)`` (1 male, 2 female, 0 unknown) as a covariate: 1.0, 0.0, NaN."""
    return np.where(sex == 1, 1.0, np.where(sex == 2, 0.0, np.nan))


def males_only_on_y(genotypes: np.ndarray, is_y: np.ndarray, male: np.ndarray) -> np.ndarray:
    """Genotypes with every non-male sample's call on chrY columns set missing (-127; NaN for dosages).

    ``genotypes`` int8 ``(n, m)`` (or float dosages, NaN missing); ``is_y`` bool ``(m,)``; ``male`` bool ``(n,)``. Returns the input
    when no column is on chrY, else a new Fortran-ordered array.
    """
    if not np.any(is_y) or np.all(male):
        return genotypes
    out = np.array(genotypes, order="F", copy=True)
    columns = np.flatnonzero(is_y)
    out[np.ix_(~male, columns)] = np.nan if out.dtype.kind == "f" else -127
    return out


def haploid_males_on_x(genotypes: np.ndarray, flip: np.ndarray, is_x: np.ndarray,
                       male: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PLINK 2's ``--xchr-model 1`` coding: males' non-PAR chrX dosages of the study's effect allele halved.

    ``genotypes`` int8 ``(n, m)`` (-127 missing) or float dosages (NaN missing); ``flip`` bool ``(m,)``
    (columns counting the study's other allele); ``is_x`` bool ``(m,)``; ``male`` bool ``(n,)``. Halving
    does not commute with flipping (``2 - g``), so the flip is applied here: returns float32 dosages
    ``(n, m)`` Fortran-ordered, NaN missing, already in the study's orientation, and an all-False flip.
    Returns the inputs unchanged when no column is on chrX or no sample is male.
    """
    if not np.any(is_x) or not np.any(male):
        return genotypes, flip
    if genotypes.dtype.kind == "f":
        out = np.array(genotypes, dtype=np.float32, order="F", copy=True)
    else:
        out = np.asfortranarray(np.where(genotypes >= 0, genotypes, np.nan).astype(np.float32))
    if np.any(flip):
        out[:, flip] = 2 - out[:, flip]
    columns = np.flatnonzero(is_x)
    out[np.ix_(male, columns)] *= 0.5
    return out, np.zeros_like(flip)


#: Tables less likely than the observed one by more than this factor (e^-46 ~ 1e-20) are left out of
#: the chrX exact test's sums: even 10^9 of them move the p-value by less than 1e-11 of itself.
_X_HWE_NEGLIGIBLE_LOG = 46.0


def x_hwe_neg_log10_p(female_hom1: np.ndarray, female_het: np.ndarray, female_hom2: np.ndarray,
                      male1: np.ndarray, male2: np.ndarray, midp: bool = False) -> np.ndarray:
    """-log10 p of the exact Hardy-Weinberg test for chrX (Graffelman & Weir 2016), as PLINK 2's ``.hardy.x``.

    Conditional on the allele counts over females (two alleles each) and males (one each), the
    probability of ``m1`` male allele-1 copies and ``h`` female heterozygotes is
    ``C(n_m, m1) n_f! / (f11! h! f22!) 2^h n1! n2! / N!``; the p-value sums the tables no more likely
    than the observed one (``midp``: half the tables as likely). Arrays ``(v,)`` of counts. Per
    variant, the tables are enumerated one male count at a time (a row: every female heterozygote count
    of the right parity, in log space), outward from the most likely male count until a row's most
    likely table is negligible against the observed one (:data:`_X_HWE_NEGLIGIBLE_LOG`): memory is
    ``O(n_f)`` and the rows visited grow with ``sqrt(n_m)``, so biobank-sized chrX counts are tested
    without building the ``n_m × n_f`` grid. Ties within 1e-9 relative. No allele observed: NaN.
    """
    out = np.full(len(female_het), np.nan)
    for i in range(len(female_het)):
        f11, h, f22, m1, m2 = (int(v[i]) for v in (female_hom1, female_het, female_hom2, male1, male2))
        if f11 + h + f22 + m1 + m2:
            out[i] = _x_hwe_one(f11, h, f22, m1, m2, midp=midp)
    return out


def _x_hwe_one(f11: int, h: int, f22: int, m1: int, m2: int, midp: bool) -> float:
    """:func:`x_hwe_neg_log10_p` of one variant's counts (at least one allele observed)."""
    from scipy.special import gammaln  # coordinator side only

    n_f, n_m = f11 + h + f22, m1 + m2
    n1 = 2 * f11 + h + m1
    constant = gammaln(n_m + 1) + gammaln(n_f + 1)

    def row(males: int) -> np.ndarray:
        """log P of every table with ``males`` male allele-1 copies (female hets of the right parity)."""
        female_alleles = n1 - males
        hets = np.arange(female_alleles % 2, min(female_alleles, 2 * n_f - female_alleles) + 1, 2)
        f11_row = (female_alleles - hets) // 2
        return (constant - gammaln(males + 1) - gammaln(n_m - males + 1) - gammaln(f11_row + 1) - gammaln(hets + 1)
                - gammaln(n_f - f11_row - hets + 1) + hets * np.log(2.0))

    low, high = max(0, n1 - 2 * n_f), min(n_m, n1)  # male counts with a valid female table
    observed = float(row(m1)[(h - (n1 - m1) % 2) // 2])
    tol = 1e-9 * max(1.0, abs(observed))
    floor = observed - _X_HWE_NEGLIGIBLE_LOG
    mode = min(max(round(n_m * n1 / (2 * n_f + n_m)), low), high)
    rows = []
    for start, stop, step in ((mode, high + 1, 1), (mode - 1, low - 1, -1)):
        previous = np.inf
        for males in range(start, stop, step):
            values = row(males)
            best = float(values.max())
            if best < floor and best <= previous:  # past the peak and negligible: so is every row further out
                break
            rows.append(values)
            previous = best
    log_p = np.concatenate(rows)
    top = max(float(log_p.max()), observed)
    weights = np.exp(log_p - top)
    less = weights[log_p < observed - tol].sum()
    equal = weights[np.abs(log_p - observed) <= tol].sum()
    p = (less + (equal / 2 if midp else equal)) / weights.sum()
    return float(-np.log10(min(p, 1.0)))


def counts_by_class(kind: np.ndarray, male: np.ndarray, female: np.ndarray, unknown: np.ndarray) -> dict[str, np.ndarray]:
    """PLINK 2's QC counts from genotype counts split by sex, per chromosome class.

    ``male``/``female``/``unknown``: ``(m, 4)`` counts (effect homozygotes, heterozygotes, other
    homozygotes, missing) of each sex group; ``kind`` ``(m,)`` from :func:`chromosome_class`. Returns
    ``(m,)`` int64 arrays: diploid ``hom_effect``, ``het``, ``hom_other``; haploid ``hap_effect``,
    ``hap_other`` and ``hap_het`` (a heterozygous haploid call: one allele observation, half an effect
    allele in frequencies, missing in ``.gcount``); ``missing`` (``.vmiss``); and for chrX the
    ``.hardy.x`` inputs ``female_*`` and ``male_effect``/``male_other``. Rules (measured on PLINK 2):
    chrX: females and unknown sex diploid, males haploid; chrY: males only, haploid; MT: everyone haploid.
    """
    everyone = male + female + unknown
    x, y, mt = kind == X, kind == Y, kind == MT
    haploid = np.where(x[:, None], male, np.where(y[:, None], male, np.where(mt[:, None], everyone, 0)))
    diploid = np.where(x[:, None], female + unknown, np.where((y | mt)[:, None], 0, everyone))
    counted = np.where(y[:, None], male, everyone)
    as_int = lambda a: np.rint(a).astype(np.int64)  # noqa: E731
    return {
        "hom_effect": as_int(diploid[:, 0]), "het": as_int(diploid[:, 1]), "hom_other": as_int(diploid[:, 2]),
        "hap_effect": as_int(haploid[:, 0]), "hap_het": as_int(haploid[:, 1]), "hap_other": as_int(haploid[:, 2]),
        "missing": as_int(counted[:, 3]),
        "female_hom_effect": as_int(female[:, 0]), "female_het": as_int(female[:, 1]),
        "female_hom_other": as_int(female[:, 2]), "male_effect": as_int(male[:, 0]), "male_other": as_int(male[:, 2]),
    }
