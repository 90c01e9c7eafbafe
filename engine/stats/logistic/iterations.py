"""The per-variant iterations of case/control fits at the coordinator: PLINK 2's pre-fit screen,
Newton's method (PLINK's LogisticRegression) and Firth's penalised likelihood (its FirthRegression),
batched over variants. :mod:`engine.stats.logistic.solve` drives them round by round.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from engine.stats.association import ERRCODE_OK
from engine.stats.logistic.kernel import LogisticLayout
from engine.stats.spd import Cholesky

MAX_CORR = 0.999
MAX_VIF = 50.0
#: Newton (PLINK's LogisticRegression): convergence when sum |step| is below this (its divergence and
#: iteration limits are the literals of ``NewtonIterations._step``).
NEWTON_TOL = 1e-4
#: Firth (PLINK's FirthRegression): logistf's gconv, xconv, lconv, maxit, maxstep and maxhs.
FIRTH_TOL = 1e-4
FIRTH_MAX_ITER = 25
FIRTH_MAX_STEP = 5.0
FIRTH_MAX_HALVINGS = 5
#: Relative slack when comparing penalised log-likelihoods: a "decrease" smaller than this is rounding
#: (float64 sums over samples, secure aggregation's 2^-40 per site), not a reason to halve the step.
#: It must stay tiny: for a singleton the likelihood is so flat that PLINK's path (and whether it ends
#: UNFINISHED) depends on decreases of ~1e-6.
LOGLIK_SLACK = 1e-11
#: Variants per batch when expanding Firth third moments (bounds memory: 16k x 7^3 doubles = 45 MB).
TENSOR_BATCH = 16_384

#: A variant's state in an iteration.
ACTIVE, CONVERGED, UNFINISHED, FAILED = 0, 1, 2, 3


@dataclass(frozen=True)
class BinaryScreen:
    """What the linear statistics of a 0/1 phenotype say about each variant, shapes ``(M,)``.

    ``errcode`` holds PLINK's pre-fit ERRCODEs (``.`` where a fit is run); ``zero_cell`` marks variants
    whose effect or other allele is absent among cases or among controls (firth-fallback goes
    straight to Firth for them).
    """

    n: np.ndarray
    n_cases: np.ndarray
    allele_count: np.ndarray
    case_allele_count: np.ndarray
    errcode: np.ndarray
    zero_cell: np.ndarray


def screen_variants(xtx: np.ndarray, xty: np.ndarray) -> BinaryScreen:
    """PLINK 2's pre-fit checks from per-variant ``X'X`` ``(M, P, P)`` and ``X'y`` ``(M, P)``.

    The genotype is the last predictor and the intercept the first.
    """
    m, p, _ = xtx.shape
    n = xtx[:, 0, 0]
    allele = xtx[:, 0, p - 1]
    case_allele = xty[:, p - 1]
    n_cases = xty[:, 0]
    errcode = np.full(m, ERRCODE_OK, dtype=object)
    errcode[n <= p] = "SAMPLE_CT<=PREDICTOR_CT"
    constant = (n * xtx[:, p - 1, p - 1] == allele * allele)  # integer counts: exact in float64
    errcode[(errcode == ERRCODE_OK) & constant] = "CONST_OMITTED_ALLELE"
    todo = np.flatnonzero(errcode == ERRCODE_OK)
    chunks = [todo[start: start + TENSOR_BATCH] for start in range(0, len(todo), TENSOR_BATCH)]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # numpy releases the GIL
        for chunk, codes in zip(chunks, pool.map(lambda rows: _predictor_checks(xtx[rows]), chunks)):
            errcode[chunk] = codes
    ref, case_ref = 2.0 * n - allele, 2.0 * n_cases - case_allele
    zero_cell = (case_allele == 0) | (case_allele == allele) | (case_ref == 0) | (case_ref == ref)
    return BinaryScreen(n=n, n_cases=n_cases, allele_count=allele, case_allele_count=case_allele,
                        errcode=errcode, zero_cell=zero_cell)


def _predictor_checks(xtx: np.ndarray) -> np.ndarray:
    """CORR_TOO_HIGH / VIF_INFINITE / VIF_TOO_HIGH among the non-intercept predictors, as PLINK checks them."""
    out = np.full(len(xtx), ERRCODE_OK, dtype=object)
    if len(xtx) == 0:
        return out
    n = xtx[:, 0, 0]
    sums = xtx[:, 0, 1:]
    cov = (xtx[:, 1:, 1:] - sums[:, :, None] * sums[:, None, :] / n[:, None, None]) / (n - 1.0)[:, None, None]
    var = np.einsum("mii->mi", cov)
    degenerate = ~np.all(var > 0, axis=1)
    scale = 1.0 / np.sqrt(np.where(var > 0, var, 1.0))
    corr = cov * scale[:, :, None] * scale[:, None, :]
    off = ~np.eye(corr.shape[1], dtype=bool)
    too_high = np.any(np.abs(corr[:, off]) > MAX_CORR, axis=1) & ~degenerate
    out[too_high] = "CORR_TOO_HIGH"
    rest = np.flatnonzero(~too_high)
    corr_rest = corr[rest]
    corr_rest[:, ~off] = 1.0
    invertible = _positive_definite(corr_rest) & ~degenerate[rest]
    out[rest[~invertible]] = "VIF_INFINITE"
    good = rest[invertible]
    vif = np.einsum("mii->mi", inverse_spd(corr_rest[invertible]))
    out[good[np.any(vif > MAX_VIF, axis=1)]] = "VIF_TOO_HIGH"
    return out


def _positive_definite(matrices: np.ndarray) -> np.ndarray:
    """Whether each symmetric matrix ``(m, P, P)`` is numerically positive definite.

    Its Cholesky factorisation succeeds and the smallest pivot of the Jacobi-scaled matrix (unit
    diagonal; the pivot divided by the diagonal entry) exceeds 1e-13; decided per matrix, whatever
    else is in the batch (:class:`engine.stats.spd.Cholesky`).
    """
    if len(matrices) == 0:
        return np.zeros(0, dtype=bool)
    diag = np.einsum("mii->mi", matrices)
    ok = np.all(np.isfinite(matrices), axis=(1, 2)) & np.all(diag > 0, axis=1)
    safe = np.where(ok[:, None, None], matrices, np.eye(matrices.shape[1]))
    with np.errstate(invalid="ignore"):
        scaled_pivots = Cholesky(safe).pivots / np.einsum("mii->mi", safe)
        return ok & (scaled_pivots.min(axis=1) > 1e-13)


def _solve(matrices: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """``matrices^-1 rhs`` for positive definite ``(m, P, P)`` and ``(m, P)`` (Cholesky needs no scaling)."""
    return Cholesky(matrices).solve(rhs)


def inverse_spd(matrices: np.ndarray) -> np.ndarray:
    """Inverses of positive definite matrices ``(m, P, P)``."""
    return Cholesky(matrices).inverse()


class NewtonIterations:
    """PLINK 2's LogisticRegression for many variants: Newton steps from 0, its stopping rules."""

    def __init__(self, m: int, p: int) -> None:
        self.coef = np.zeros((m, p))
        self.min_delta = np.full(m, 1e9)
        self.iteration = np.zeros(m, dtype=np.int64)
        self.status = np.full(m, -1, dtype=np.int64)  # -1: not fitted by Newton
        self.info = np.zeros((m, p, p))  # X'WX of the last step

    def start(self, index: np.ndarray, info: np.ndarray, score: np.ndarray) -> None:
        """Iteration 0 (coefficients 0) for ``index``, from ``X'X / 4`` and ``X'y - X'1 / 2``."""
        self.begin(index)
        self.iteration[index] = 0
        self._step(index, info, score)

    def begin(self, index: np.ndarray, coef: np.ndarray | float = 0.0) -> None:
        """Start ``index`` afresh at ``coef`` (``(P,)``, or 0), iteration 0 still to be evaluated by a round."""
        self.status[index] = ACTIVE
        self.coef[index] = coef
        self.iteration[index] = -1
        self.min_delta[index] = 1e9

    def pending(self) -> np.ndarray:
        return np.flatnonzero(self.status == ACTIVE)

    def update(self, index: np.ndarray, info: np.ndarray, score: np.ndarray) -> None:
        self.iteration[index] += 1
        self._step(index, info, score)

    def _step(self, index: np.ndarray, info: np.ndarray, score: np.ndarray) -> None:
        ok = _positive_definite(info)
        step = np.full(score.shape, np.nan)
        if np.any(ok):
            step[ok] = _solve(info[ok], score[ok])
        self.info[index] = info
        coef = self.coef[index] + step
        self.coef[index] = coef
        delta = np.abs(step).sum(axis=1)
        it = self.iteration[index]
        min_delta = np.minimum(self.min_delta[index], delta)
        self.min_delta[index] = min_delta
        status = np.full(len(index), ACTIVE)
        big = np.max(np.abs(coef), axis=1)
        with np.errstate(invalid="ignore"):
            exploding = (delta > 20.0) & (delta > 2.0 * min_delta)
            stuck = (it > 6) & (np.abs(1.0 - delta) < 1e-3)
            diverged = (it > 3) & (exploding | stuck)
            status[np.isnan(delta) | diverged] = FAILED
            at_limit = (status == ACTIVE) & (it > 13)
            status[at_limit] = np.where(big[at_limit] > 8e3, FAILED, UNFINISHED)
            done = (status == ACTIVE) & (delta < NEWTON_TOL)
        status[done] = np.where(big[done] > 6e4, FAILED, CONVERGED)
        self.status[index] = status


class FirthIterations:
    """PLINK 2 (v2.00a3.5)'s FirthRegression for many variants, one evaluation round at a time."""

    def __init__(self, m: int, layout: LogisticLayout) -> None:
        p = layout.n_predictors
        self.layout = layout
        self.status = np.full(m, -1, dtype=np.int64)
        self.coef = np.zeros((m, p))  # accepted coefficients
        self.trial = np.zeros((m, p))  # coefficients being evaluated
        self.step = np.zeros((m, p))
        self.info = np.zeros((m, p, p))  # X'WX at the accepted coefficients
        self.loglik = np.zeros(m)  # penalised, at the accepted coefficients
        self.loglik_old = np.zeros(m)
        self.threshold = np.zeros(m)
        self.step_max = np.zeros(m)
        self.score_max = np.zeros(m)
        self.small_step = np.zeros(m, dtype=bool)  # step and score both below tolerance
        self.max_halvings = np.zeros(m, dtype=np.int64)
        self.halving = np.zeros(m, dtype=np.int64)
        self.bailed = np.zeros(m, dtype=bool)
        self.iteration = np.zeros(m, dtype=np.int64)

    def start(self, index: np.ndarray, info: np.ndarray, score: np.ndarray, n: np.ndarray) -> None:
        """Evaluation at coefficients 0 (``p = 1/2``: log-likelihood ``n log 1/2``, third moments 0)."""
        self.status[index] = ACTIVE
        self.coef[index] = 0.0
        self.iteration[index] = 0
        self.bailed[index] = False
        ok = _positive_definite(info)
        self.status[index[~ok]] = FAILED
        good = index[ok]
        self.info[good] = info[ok]
        self.loglik[good] = n[ok] * np.log(0.5) + 0.5 * np.linalg.slogdet(info[ok])[1]
        self._next_step(good, score[ok])

    def pending(self) -> np.ndarray:
        return np.flatnonzero(self.status == ACTIVE)

    def _next_step(self, index: np.ndarray, ustar: np.ndarray) -> None:
        """Top of PLINK's iteration loop: the step from ``U*`` at the accepted coefficients."""
        step = np.einsum("mij,mj->mi", inverse_spd(self.info[index]), ustar)
        score_max = np.max(np.abs(ustar), axis=1)
        step_max = np.max(np.abs(step), axis=1)
        capped = step_max > FIRTH_MAX_STEP
        step[capped] *= (FIRTH_MAX_STEP / step_max[capped])[:, None]
        step_max[capped] = FIRTH_MAX_STEP
        small = (step_max <= FIRTH_TOL) & (score_max < FIRTH_TOL)
        self.step[index], self.step_max[index], self.score_max[index] = step, step_max, score_max
        self.small_step[index] = small
        self.loglik_old[index] = self.loglik[index]
        self.threshold[index] = self.loglik[index] - np.where(small, 0.999999 * FIRTH_TOL, 0.0)
        self.max_halvings[index] = FIRTH_MAX_HALVINGS
        self.halving[index] = 1
        self.trial[index] = self.coef[index] + step

    def update(self, index: np.ndarray, packed: np.ndarray) -> None:
        """One evaluation round at ``self.trial[index]``: halve the step, or accept and step again."""
        layout = self.layout
        info = layout.unpack_info(packed)
        ok = _positive_definite(info)
        self.status[index[~ok]] = FAILED
        index, packed, info = index[ok], packed[ok], info[ok]
        loglik = packed[:, layout.loglik_column] + 0.5 * np.linalg.slogdet(info)[1]
        h, maxhs = self.halving[index], self.max_halvings[index]
        old, threshold = self.loglik_old[index], self.threshold[index]
        accept = h > maxhs
        slack = LOGLIK_SLACK * np.maximum(1.0, np.abs(old))  # rounding, see the constant
        above = ~accept & (loglik >= threshold - slack)
        accept |= above & (loglik >= old - slack)
        maxhs = np.where(above & ~accept, h, maxhs)
        below_at_last = ~accept & ~above & (h == maxhs)
        bail = (below_at_last & (self.step_max[index] < 1e-3) & (self.score_max[index] < 0.05)
                & (loglik >= old - FIRTH_TOL))
        h = np.where(bail, h - 1, h)
        maxhs = np.where(bail, maxhs - 1, maxhs)
        self.bailed[index[bail]] = True
        halve = ~accept
        hv = index[halve]
        self.trial[hv] -= self.step[hv] * np.exp2(-h[halve].astype(float))[:, None]
        self.halving[hv] = h[halve] + 1
        self.max_halvings[hv] = maxhs[halve]
        self._accept(index[accept], packed[accept], info[accept], loglik[accept])

    def _accept(self, index: np.ndarray, packed: np.ndarray, info: np.ndarray, loglik: np.ndarray) -> None:
        self.coef[index] = self.trial[index]
        self.info[index] = info
        change = loglik - self.loglik_old[index]
        self.loglik[index] = loglik
        converged = (np.abs(change) <= FIRTH_TOL) & (self.small_step[index] | self.bailed[index])
        unfinished = ~converged & (self.iteration[index] == FIRTH_MAX_ITER - 1)
        self.status[index[converged]] = CONVERGED
        self.status[index[unfinished]] = UNFINISHED
        going = ~converged & ~unfinished
        index, packed, info = index[going], packed[going], info[going]
        self.iteration[index] += 1
        self._next_step(index, _modified_score(packed, info, self.layout))


def _modified_score(packed: np.ndarray, info: np.ndarray, layout: LogisticLayout) -> np.ndarray:
    """Firth's ``U*_a = X'(y - p)_a + sum_bc T_abc [(X'WX)^-1]_bc``, shape ``(m, P)``."""
    ustar = packed[:, layout.grad_slice].copy()
    for start in range(0, len(packed), TENSOR_BATCH):
        rows = slice(start, start + TENSOR_BATCH)
        ustar[rows] += np.einsum("mabc,mbc->ma", layout.unpack_tensor(packed[rows]), inverse_spd(info[rows]))
    return ustar
