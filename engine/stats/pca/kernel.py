"""Federated PCA, the site side: products of the standardised genotype matrix with per-variant inputs.

PLINK 2's ``--pca`` extracts the top eigenvectors of the variance-standardised relationship matrix
``GRM = Z Z' / M``, where ``Z`` is ``(n, M)`` with ``z_ij = (g_ij - 2 p_j) / sqrt(2 p_j (1 - p_j))``,
``p_j`` the allele frequency over every sample, ``M`` the number of variants, and a missing call
mean-imputed (``z_ij = 0``, PLINK 2's behaviour for ``--pca approx`` and ``--pca meanimpute``).
Its eigenvalues are the eigenvalues of ``Z' Z / M``, whose ``(M, M)`` matrix is a sum over samples,
hence over sites: ``Z' Z = sum_k Z_k' Z_k``. A site never forms it; in each round it returns, for the
coordinator's per-variant input ``V`` ``(M, b)``, the per-variant rows of ``Z_k' (Z_k V)`` ``(M, b)``.
That takes two passes over its genotypes: the first accumulates the site's sample-space product
``U_k = Z_k V`` ``(n_k, b)`` (which never leaves the site), the second streams ``Z_k' U_k`` block by
block. At the end of a PCA, ``V`` holds the final loadings scaled by ``1 / sqrt(eigenvalue)``, so that
``U_k`` *is* the site's own rows of the sample eigenvectors (PLINK's ``.eigenvec``); the site keeps
them (:mod:`site_agent.scores`).

The kernels work on the raw int8 codes (``-127`` = missing): one chunked conversion to float, one thin
GEMM, and a sparse product over the missing calls that removes what the ``-127`` code contributed,
as :mod:`engine.stats.linear.kernel` does. The coordinator's side (frequencies, Krylov iteration, Rayleigh-Ritz)
is :mod:`engine.stats.pca.solve`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
from scipy import sparse

from engine.cohort.cohort import Cohort
from engine.stats.statistic import InputSpec
from engine.errors import ProtocolError


#: Code of a missing call in the int8 genotype blocks.
_MISSING = -127.0
#: float values converted per GEMM chunk (a few MiB: stays in cache between conversion and GEMM).
_GEMM_CHUNK_VALUES = 1 << 20
#: ``TaskHeader.parameters`` key: the site keeps this round's ``U_k`` as its PCA sample scores, under
#: this PCA run identifier (:mod:`site_agent.scores`).
SCORES_PARAMETER = "pca.keep_scores"
#: ``TaskHeader.parameters`` key: covariates named ``PC1``.. come from the site's scores of this run.
COVARIATES_PARAMETER = "pca.covariates"


@dataclass(frozen=True)
class _Oriented:
    """Per-variant centring and scaling in the site's own allele orientation, ``(m,)`` each."""

    mean: np.ndarray  # 2p of the counted allele
    scale: np.ndarray  # 1 / sqrt(2p(1-p)), negated where the site counts the other allele; 0 if constant


def _orient(standard: np.ndarray, flip: np.ndarray) -> _Oriented:
    """Study-oriented ``[2p, 1/sd]`` ``(m, 2)`` turned into the site's orientation.

    With ``g' = 2 - g`` for a flipped variant, ``(g' - 2p) s = (g - (2 - 2p)) (-s)``: no genotype copy.
    """
    mean = np.where(flip, 2.0 - standard[:, 0], standard[:, 0])
    scale = np.where(flip, -standard[:, 1], standard[:, 1])
    return _Oriented(mean, scale)


def missing_indicator(raw: np.ndarray) -> sparse.csr_matrix:
    """CSR ``(m, n)`` with a 1 at (variant, sample) for each missing call of ``raw`` ``(n, m)``."""
    n, m = raw.shape
    flat = np.flatnonzero(raw.ravel(order="F") < 0)
    variant_of = flat // max(n, 1)
    indptr = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(np.bincount(variant_of, minlength=m), out=indptr[1:])
    return sparse.csr_matrix((np.ones(len(flat)), flat - variant_of * n, indptr), shape=(m, n))


def _chunks(n: int, m: int, dtype: np.dtype) -> tuple[int, np.ndarray]:
    chunk = max(1, min(m, _GEMM_CHUNK_VALUES // max(n, 1)))
    return chunk, np.empty((n, chunk), dtype=dtype, order="F")


def project(genotypes: np.ndarray, flip: np.ndarray, standard: np.ndarray, v: np.ndarray,
            dtype: type = np.float64, missing: sparse.csr_matrix | None = None) -> np.ndarray:
    """``Z V`` for one block of variants: the block's contribution to the sample-space product.

    Parameters
    ----------
    genotypes
        int8 ``(n, m)`` counts of the site's counted allele, ``-127`` for a missing call.
    flip
        bool ``(m,)``: variants whose counted allele is the study's other allele.
    standard
        ``(m, 2)`` float64: ``2p`` and ``1 / sqrt(2p(1-p))`` of the study's effect allele (0 for a
        constant variant, which then contributes nothing).
    v
        ``(m, b)`` float64 per-variant input.
    dtype
        Precision of the GEMM (float64, or float32 for speed; sums are returned in float64).
    missing
        The block's missing-call indicator (:func:`missing_indicator`), if already computed.

    Returns
    -------
    numpy.ndarray
        ``(n, b)`` float64: ``sum_j z_ij v_jc`` over the block's variants, missing calls counting 0.
    """
    n, m = genotypes.shape
    oriented = _orient(standard, flip)
    weights = oriented.scale[:, None] * v  # (m, b)
    raw = np.asfortranarray(genotypes)
    out = np.zeros((n, v.shape[1]))
    chunk, buffer = _chunks(n, m, np.dtype(dtype))
    weights_cast = weights.astype(dtype, copy=False)
    for start in range(0, m, chunk):
        stop = min(start + chunk, m)
        view = buffer[:, : stop - start]
        np.copyto(view, raw[:, start:stop], casting="unsafe")
        out += view @ weights_cast[start:stop]
    out -= oriented.mean @ weights  # the centring, identical for every sample: (b,)
    missing = missing_indicator(raw) if missing is None else missing
    if missing.nnz:  # remove what the -127 code and the centring added for each missing call
        out -= missing.T @ ((_MISSING - oriented.mean)[:, None] * weights)
    return out


def back_project(genotypes: np.ndarray, flip: np.ndarray, standard: np.ndarray, u: np.ndarray,
                 dtype: type = np.float64, missing: sparse.csr_matrix | None = None) -> np.ndarray:
    """``Z' U`` for one block of variants: per-variant sums over samples.

    Parameters are as for :func:`project`, with ``u`` ``(n, b)`` float64 (one row per sample of the
    block). Returns ``(m, b)`` float64: ``sum_i z_ij u_ic``.
    """
    n, m = genotypes.shape
    oriented = _orient(standard, flip)
    raw = np.asfortranarray(genotypes)
    cross = np.empty((m, u.shape[1]))
    chunk, buffer = _chunks(n, m, np.dtype(dtype))
    u_t: np.ndarray = np.ascontiguousarray(u.T.astype(dtype, copy=False))  # (b, n)
    for start in range(0, m, chunk):
        stop = min(start + chunk, m)
        view = buffer[:, : stop - start]
        np.copyto(view, raw[:, start:stop], casting="unsafe")
        cross[start:stop] = (u_t @ view).T
    cross -= oriented.mean[:, None] * u.sum(axis=0)[None, :]
    missing = missing_indicator(raw) if missing is None else missing
    if missing.nnz:
        cross -= (_MISSING - oriented.mean)[:, None] * (missing @ u)
    return oriented.scale[:, None] * cross


@dataclass
class PcaState:
    """Per-task state of :class:`PcaStatistic`: the site's sample-space product ``U_k = Z_k V``,
    ``(n, b)``, accumulated during the first pass and used by the second, and each block's
    missing-call indicator from the first pass (the second visits the same blocks in the same order)."""

    n_samples: int
    width: int
    dtype: type
    product: np.ndarray = field(init=False)
    missing: list[sparse.csr_matrix] = field(default_factory=list)
    scanned: int = 0
    returned: int = 0

    def __post_init__(self) -> None:
        self.product = np.zeros((self.n_samples, self.width))


class PcaStatistic:
    """Site analysis ``pca``: per-variant rows of ``Z_k' (Z_k V)`` for the input ``v`` ``(M, b)``.

    Inputs (per variant): ``standard`` ``(M, 2)`` (``2p`` and ``1 / sd`` from the pooled frequencies,
    study orientation) and ``v`` ``(M, b)``. Two passes over the task's blocks: :meth:`scan` first
    (every block, in order), then :meth:`block`. Every sample of the cohort counts (the coordinator
    asks for the QC cohort: no phenotype, no covariates).
    """

    name = "pca"
    needs_phenotype = False
    inputs: Mapping[str, InputSpec]
    #: GEMM precision of the site kernels; float32 halves the conversion and GEMM cost.
    dtype: type = np.float32

    def __init__(self) -> None:

        self.inputs = {"standard": InputSpec("float64", per_variant=True, trailing=(2,)),
                       "v": InputSpec("float64", per_variant=True, trailing=(None,))}

    def prepare(self, cohort: Cohort, inputs: Mapping[str, np.ndarray]) -> PcaState:
        width = inputs["v"].shape[1]
        if not 1 <= width <= 1024:
            raise ProtocolError(f"input 'v' has {width} columns; the PCA analysis takes 1 to 1024")
        standard = inputs["standard"]
        if np.any(standard[:, 0] < 0) or np.any(standard[:, 0] > 2) or np.any(standard[:, 1] < 0):
            raise ProtocolError("input 'standard' must hold 2p in [0, 2] and a non-negative inverse sd per variant")
        return PcaState(cohort.n_samples, width, self.dtype)

    def width(self, state: PcaState) -> int:
        return state.width

    def scan(self, state: PcaState, genotypes: np.ndarray, flip: np.ndarray,
             inputs: Mapping[str, np.ndarray]) -> None:
        """First pass: accumulate ``U_k += Z_block V_block``."""
        missing = missing_indicator(np.asfortranarray(genotypes))
        state.product += project(genotypes, flip, inputs["standard"], inputs["v"], state.dtype, missing)
        state.missing.append(missing)
        state.scanned += genotypes.shape[1]

    def block(self, state: PcaState, genotypes: np.ndarray, flip: np.ndarray,
              inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Second pass: ``Z_block' U_k`` ``(m, b)``."""
        index = state.returned
        missing = state.missing[index] if index < len(state.missing) else None
        if missing is not None and missing.shape != (genotypes.shape[1], genotypes.shape[0]):
            missing = None
        state.returned += 1
        return back_project(genotypes, flip, inputs["standard"], state.product, state.dtype, missing)

    def sample_values(self, state: PcaState) -> np.ndarray:
        """``U_k`` ``(n, b)``: per-sample values that stay at the site (its PCA scores in the last round)."""
        return state.product
