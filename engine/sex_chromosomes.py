"""Sex chromosomes in association tests, as PLINK 2 (v2.00a3.5) ``--glm`` codes them.

Measured against ``plink2 --glm`` on the pooled data (tests/test_sex_chromosomes.py):

* **chrX** (outside the pseudo-autosomal regions; PLINK names the PARs ``XY``, which stay diploid):
  PLINK 2's default ``--xchr-model 2`` codes males' calls 0/2 like females' (so the genotype column
  is the .bed's allele count) and adds the .fam sex as a covariate, which leaves out samples of unknown
  sex. ``no-x-sex`` drops that covariate (everyone analysed); ``--xchr-model 0`` skips chrX.
  ``--xchr-model 1`` (males 0/1) is not implemented: it is refused with a clear error.
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

from engine.harmonise import normalise_chromosome

#: Reserved covariate name: the .fam sex (1 = male, 0 = female, unknown = missing), added on chrX.
FAM_SEX_COVARIATE = "@FAM_SEX"
#: Beta and SE factor of haploid chromosomes (PLINK 2's dosage g / 2).
HAPLOID_SCALE = 2.0
#: ``--xchr-model`` values implemented (PLINK 2's default is 2).
XCHR_MODELS = (0, 2)
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
    """Genotypes with every non-male sample's call on chrY columns set missing (-127).

    ``genotypes`` int8 ``(n, m)``; ``is_y`` bool ``(m,)``; ``male`` bool ``(n,)``. Returns the input
    when no column is on chrY, else a new Fortran-ordered array.
    """
    if not np.any(is_y) or np.all(male):
        return genotypes
    out = np.array(genotypes, order="F", copy=True)
    columns = np.flatnonzero(is_y)
    out[np.ix_(~male, columns)] = -127
    return out
