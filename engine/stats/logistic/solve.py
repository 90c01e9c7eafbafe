"""Federated logistic regression with PLINK 2's Firth fallback: the coordinator's side.

:class:`BinaryTraitFit` is a state machine over all variants at once. It starts from the linear
sufficient statistics of a case/control phenotype (``X'X``, ``X'y``: one round of the ``linear``
analysis), which give PLINK 2's per-variant checks, its firth-fallback screen and, exactly, the first
Newton and Firth iterations (at coefficients 0, ``p = 1/2`` for everyone, so ``X'WX = X'X / 4`` and the
score is ``X'y - X'1 / 2``). It then asks for rounds (:meth:`BinaryTraitFit.requests`): per-variant
coefficients in, aggregated ``X'WX``, score (and for Firth log-likelihood and third moments, see
:mod:`engine.stats.logistic.kernel`) out, until every variant is decided.

Rules follow PLINK 2 v2.00a3.5 ``--glm`` (``plink2_glm_logistic.cc``), applied in double precision:

- before any fit: ``SAMPLE_CT<=PREDICTOR_CT``, ``CONST_OMITTED_ALLELE`` (constant genotype), then the
  predictor checks ``CORR_TOO_HIGH`` (|r| > 0.999), ``VIF_INFINITE`` and ``VIF_TOO_HIGH`` (VIF > 50);
- firth-fallback: Firth regression directly when the effect or the other allele has zero count among
  cases or among controls; otherwise Newton from 0 with PLINK's stopping rules on ``delta = sum |step|``
  (converged when ``delta < 1e-4``; failed on NaN, on ``delta > 20`` and twice its minimum, on
  ``|1 - delta| < 1e-3`` after iteration 6, or on a coefficient beyond 6e4 (8e3 at the limit);
  ``UNFINISHED`` after iteration 13), and Firth regression when Newton fails;
- Firth (logistf port): Newton steps ``(X'WX)^-1 U*`` capped at 5, up to 5 step halvings when the
  penalised log-likelihood ``l + log det(X'WX) / 2`` drops, converged when the step and ``U*`` are
  below 1e-4 and the likelihood moved less than 1e-4 (a drop below 1e-11 relative counts as rounding,
  not as a drop: secure aggregation rounds every site's sums to 2^-40); ``UNFINISHED`` after 25 iterations;
  ``FIRTH_CONVERGE_FAIL`` if ``X'WX`` is not positive definite;
- the standard error is ``sqrt(diag((X'WX)^-1))`` (for logistic regression the ``X'WX`` of the last
  Newton step), ``INVALID_RESULT`` when a variance is below 1e-20 or non-finite; Wald z and p.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from engine.stats.association import ERRCODE_OK, AssociationResult, VariantTable
from engine.errors import InputError
from engine.stats.linear.kernel import LinearLayout
from engine.stats.logistic.iterations import (ACTIVE, CONVERGED, FAILED, TENSOR_BATCH, UNFINISHED, BinaryScreen,
                                              FirthIterations, NewtonIterations, inverse_spd, screen_variants)
from engine.stats.logistic.kernel import LogisticLayout
from engine.stats.logistic.start import StartLayout
from engine.stats.pvalues import z_test_neg_log10_p
from engine.stats.qc.dosage import mach_r2
from engine.stats.spd import Cholesky

#: Fixed-point iterations for the second-order start (each multiplies the error by ~|step|; the quadratic
#: model's own error is ~|step|^3, which two iterations reach).
SECOND_ORDER_ITERATIONS = 2



@dataclass(frozen=True)
class RoundRequest:
    """One round to run: ``analysis`` on ``variants`` (study indices, ``(r,)``) with its named ``inputs``."""

    analysis: str  # "covariate_fit", "logistic_start", "linear", "logistic", "logistic_exact" or "firth"
    variants: np.ndarray
    inputs: Mapping[str, np.ndarray]
    width: int


class NoCasesOrControls(InputError):
    """The pooled cohort has no cases (``absent == "cases"``) or no controls."""

    def __init__(self, absent: str) -> None:
        super().__init__(f"the phenotype has no {absent} among the analysed samples: logistic regression needs both")
        self.absent = absent


def _check_case_control(n: float, cases: float, controls: float) -> None:
    """Refuse a pooled cohort without cases or without controls (counts are exact in float64)."""
    if not cases > 0.5 or not n > 0:
        raise NoCasesOrControls("cases")
    if not controls > 0.5:
        raise NoCasesOrControls("controls")


class BinaryTraitFit:
    """Per-variant logistic regression with PLINK 2's firth-fallback (or Firth for every variant).

    Parameters
    ----------
    n_variants
        Variants of the study, M.
    n_design
        Intercept plus covariates, K.
    always_firth
        PLINK's ``--glm firth``: Firth regression for every variant.
    warm_start
        Start Newton's method near each variant's estimate, from the covariate-only fit (see the
        notes); ``False`` follows PLINK's path from 0 for every variant.

    Notes
    -----
    Rounds, as :meth:`requests` asks for them:

    1. ``covariate_fit`` (one row): the covariate-only model on the whole cohort, as PLINK 2 fits it
       first. If Newton fails there, the covariates separate cases from controls and, as PLINK 2
       does, every variant is fitted by Firth regression (after checking that the covariate-only Firth
       fit converges; if not, an :class:`InputError`, as PLINK 2 skips such a phenotype).
    2. ``logistic_start`` (every variant, :func:`engine.stats.logistic.start.start_statistics`): the linear
       statistics of the 0/1 phenotype, for PLINK's pre-fit checks, its firth-fallback screen and the
       first iteration on its path from 0; and the information, score and genotype third moments at
       ``[b, 0]``, ``b`` the covariate-only fit. Without a warm start, or for Firth only, the
       ``linear`` round gives the linear statistics alone.
    3. ``logistic`` (warm-started fits), ``logistic_exact`` (fits on PLINK's path from 0, float64
       throughout) and ``firth`` rounds until every variant is decided.

    Newton's method converges to the same maximum-likelihood estimate from any start where it
    converges. The warm start evaluates every variant at ``[b, 0]``, where all share one linear
    predictor (no ``exp`` per variant at the sites), and moves to the root of the score's
    second-order expansion there, ``I d = U - T[d, d]``; most variants then converge after one full
    evaluation, instead of three or four from 0. PLINK 2 decides failures (and so which variants
    fall back to Firth, or end ``UNFINISHED``) on its path from 0: a variant whose warm-started fit
    fails or does not finish is refitted from 0 on PLINK's path, which decides.

    Raises
    ------
    InputError
        From :meth:`update`, when the covariates separate cases from controls beyond repair.
    """

    def __init__(self, n_variants: int, n_design: int, *, always_firth: bool = False,
                 warm_start: bool = True) -> None:
        m, p = n_variants, n_design + 1
        self.n_variants = m
        self.always_firth = always_firth
        self.warm_start = warm_start and not always_firth
        self.separation = False  # the covariates alone separate cases from controls
        self.linear_layout = LinearLayout(n_design)
        self.start_layout = StartLayout(n_design)
        self.logistic_layout = LogisticLayout(n_design, firth=False)
        self.firth_layout = LogisticLayout(n_design, firth=True)
        self.covariate_layout = LogisticLayout(n_design - 1, firth=True)
        self.screen: BinaryScreen | None = None
        self.newton = NewtonIterations(m, p)
        self.firth = FirthIterations(m, self.firth_layout)
        self.null_newton = NewtonIterations(1, n_design)
        self.null_firth = FirthIterations(1, self.covariate_layout)
        self.warm = np.zeros(m, dtype=bool)  # Newton started at the covariate-only fit, not yet refitted from 0
        self.refitted = np.zeros(m, dtype=bool)  # warm-started fits that ended badly, refitted from 0
        self._null_at_zero: np.ndarray | None = None
        self._null_last: np.ndarray | None = None  # the last covariate_fit totals (third moments for the start)
        self._xtx = np.zeros((0, p, p))
        self._xty = np.zeros((0, p))
        self._start: str | None = "linear" if always_firth else None  # the start round, once it is due
        if not always_firth:
            self.null_newton.begin(np.array([0]))

    def _null_score(self, index: np.ndarray) -> np.ndarray:
        """Score ``X'(y - 1/2)`` at coefficients 0."""
        return self._xty[index] - 0.5 * self._xtx[index, 0, :]

    def requests(self) -> list[RoundRequest]:
        """Rounds still needed (empty when every variant is decided)."""
        first = np.array([0])
        if self.null_newton.status[0] == ACTIVE:
            return [RoundRequest("covariate_fit", first, {"coef": self.null_newton.coef[first].copy()},
                                 self.covariate_layout.width)]
        if self.null_firth.status[0] == ACTIVE:
            return [RoundRequest("covariate_fit", first, {"coef": self.null_firth.trial[first].copy()},
                                 self.covariate_layout.width)]
        every = np.arange(self.n_variants)
        if self._start == "linear":
            return [RoundRequest("linear", every, {}, self.linear_layout.width)]
        if self._start == "logistic_start":
            return [RoundRequest("logistic_start", every, {"null_coef": self.null_newton.coef[0].copy()},
                                 self.start_layout.width)]
        out = []
        newton = self.newton.pending()
        for analysis, variants in (("logistic", newton[self.warm[newton]]), ("logistic_exact", newton[~self.warm[newton]])):
            if len(variants):  # PLINK's path from 0 in float64 (engine.stats.logistic.kernel's precision notes)
                out.append(RoundRequest(analysis, variants, {"coef": self.newton.coef[variants].copy()},
                                        self.logistic_layout.width))
        firth = self.firth.pending()
        if len(firth):
            out.append(RoundRequest("firth", firth, {"coef": self.firth.trial[firth].copy()},
                                    self.firth_layout.width))
        return out

    def update(self, request: RoundRequest, totals: np.ndarray) -> None:
        """Fold in the aggregated output ``(r, width)`` of ``request``."""
        if totals.shape != (len(request.variants), request.width):
            expected = (len(request.variants), request.width)
            raise ValueError(f"round totals have shape {totals.shape}, expected {expected}")
        if request.analysis == "covariate_fit":
            self._update_covariate_fit(totals)
        elif request.analysis in ("linear", "logistic_start"):
            self._start = None
            self._start_variants(totals, warm=request.analysis == "logistic_start")
        elif request.analysis in ("logistic", "logistic_exact"):
            layout = self.logistic_layout
            self.newton.update(request.variants, layout.unpack_info(totals), totals[:, layout.grad_slice])
            self._fallback()
        else:
            self.firth.update(request.variants, totals)

    def _start_variants(self, totals: np.ndarray, warm: bool) -> None:
        linear = totals[:, self.start_layout.linear] if warm else totals
        self._xtx, self._xty, _ = self.linear_layout.unpack(linear)
        if self.always_firth and len(linear):  # no covariate fit before: the first sight of the phenotype
            n = self._xtx[:, 0, 0]
            _check_case_control(float(np.max(n)), float(np.max(self._xty[:, 0])), float(np.max(n - self._xty[:, 0])))
        self.screen = screen_variants(self._xtx, self._xty)
        fit = self.screen.errcode == ERRCODE_OK
        to_firth = fit & (self.screen.zero_cell | self.always_firth | self.separation)
        self._start_firth(np.flatnonzero(to_firth))
        to_newton = np.flatnonzero(fit & ~to_firth)
        if warm:
            self._start_newton_warm(to_newton, totals[to_newton])
        else:
            self._start_newton_from_zero(to_newton)
        self._fallback()

    def _start_newton_warm(self, index: np.ndarray, totals: np.ndarray) -> None:
        """Iteration 0 at ``x0 = [b, 0]`` from the start round; unless converged there, move to the
        root of the second-order expansion of the score."""
        x0 = np.r_[self.null_newton.coef[0], 0.0]
        self.warm[index] = True
        self.newton.begin(index, x0)
        logistic = totals[:, self.start_layout.logistic]
        info, score = self.logistic_layout.unpack_info(logistic), logistic[:, self.logistic_layout.grad_slice]
        self.newton.update(index, info, score)
        going = self.newton.status[index] == ACTIVE
        if np.any(going):
            moments = totals[going, self.start_layout.moments]
            n = self._xtx[index[going], 0, 0]
            assert self._null_at_zero is not None
            observed = n / (4.0 * self._null_at_zero[0, 0])  # share of the cohort observed at each variant
            self.newton.coef[index[going]] = x0 + self._second_order_step(info[going], score[going], moments, observed)

    def _second_order_step(self, info: np.ndarray, score: np.ndarray, moments: np.ndarray,
                           observed: np.ndarray) -> np.ndarray:
        """Root ``d`` ``(r, P)`` of ``U - I d - T[d, d] = 0`` by fixed-point iteration from the Newton step.

        ``T`` is the tensor of third moments (``dI/dx``: ``-2 T``): the genotype's ``moments`` ``(r, 28)``
        per variant; the covariates' own are the covariate-only fit's over the whole cohort, scaled by
        the share of the cohort ``observed`` ``(r,)`` at each variant (an approximation, which only moves
        the start). Where the iteration does not settle on a step at most twice Newton's, Newton's step
        is kept.
        """
        layout = self.firth_layout
        counts, _ = layout._triple_sources
        tensor = layout.tensor_slice
        r = len(score)
        packed = np.zeros((r, layout.width))
        packed[:, tensor.start + np.flatnonzero(counts > 0)] = moments
        assert self._null_last is not None  # the covariate fit converged before the start round
        covariate_moments = self._null_last[0, self.covariate_layout.tensor_slice]
        packed[:, tensor.start + np.flatnonzero(counts == 0)] = observed[:, None] * covariate_moments
        newton, step = np.empty_like(score), np.empty_like(score)

        def batch(rows: slice) -> None:
            factor = Cholesky(info[rows])  # positive definite: iteration 0 did not fail on these
            third = layout.unpack_tensor(packed[rows])
            newton[rows] = step[rows] = factor.solve(score[rows])
            for _ in range(SECOND_ORDER_ITERATIONS):
                quadratic = np.einsum("mabc,mb,mc->ma", third, step[rows], step[rows])  # T[d, d]
                step[rows] = factor.solve(score[rows] - quadratic)

        # Independent batches; numpy releases the GIL, and the sites wait for this step.
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            list(pool.map(batch, [slice(start, start + TENSOR_BATCH) for start in range(0, r, TENSOR_BATCH)]))
        with np.errstate(invalid="ignore"):
            keep = ~np.all(np.isfinite(step), axis=1) | (np.abs(step).sum(axis=1) > 2.0 * np.abs(newton).sum(axis=1))
        step[keep] = newton[keep]
        return step

    def _start_newton_from_zero(self, index: np.ndarray) -> None:
        """PLINK's path: iteration 0 at coefficients 0 comes from the linear statistics."""
        self.warm[index] = False
        self.newton.start(index, 0.25 * self._xtx[index], self._null_score(index))

    def _start_firth(self, index: np.ndarray) -> None:
        assert self.screen is not None
        self.firth.start(index, 0.25 * self._xtx[index], self._null_score(index), self.screen.n[index])

    def _fallback(self) -> None:
        """Warm-started fits that failed or did not finish are refitted from 0 (PLINK's path decides);
        variants whose Newton fit from 0 failed go to Firth, from 0 (PLINK's firth-fallback)."""
        ended = (self.newton.status == FAILED) | (self.newton.status == UNFINISHED)
        replay = np.flatnonzero(ended & self.warm)
        if len(replay):
            self.refitted[replay] = True
            self._start_newton_from_zero(replay)
        failed = np.flatnonzero((self.newton.status == FAILED) & (self.firth.status < 0))
        if len(failed):
            self._start_firth(failed)

    def _update_covariate_fit(self, totals: np.ndarray) -> None:
        layout, first = self.covariate_layout, np.array([0])
        if self._null_at_zero is None:  # the first evaluation is at 0: w = 1/4, score X'y - n/2
            n = 4.0 * float(totals[0, 0])
            cases = float(totals[0, layout.grad_slice.start]) + n / 2
            _check_case_control(n, cases, n - cases)
        if self.null_firth.status[0] < 0:
            if self._null_at_zero is None:
                self._null_at_zero = totals.copy()
            self._null_last = totals.copy()
            self.null_newton.update(first, layout.unpack_info(totals), totals[:, layout.grad_slice])
            status = self.null_newton.status[0]
            if status == CONVERGED:
                self._start = "logistic_start" if self.warm_start else "linear"
            elif status != ACTIVE:
                self.separation = True
                zero = self._null_at_zero
                info = layout.unpack_info(zero)
                self.null_firth.start(first, info, zero[:, layout.grad_slice], 4.0 * info[:, 0, 0])
        else:
            self.null_firth.update(first, totals)
        status = self.null_firth.status[0]
        if status in (FAILED, UNFINISHED):
            raise InputError("neither the covariate-only logistic regression nor the covariate-only Firth "
                             "regression converges (the covariates separate cases from controls, or are "
                             "collinear); PLINK 2 skips such a phenotype: check the covariates")
        if status == CONVERGED:
            self._start = "linear"

    def result(self, variants: VariantTable) -> AssociationResult:
        """The association result once :meth:`requests` is empty (test ``firth`` or ``logistic``)."""
        m = len(variants)
        p = self.firth_layout.n_predictors
        screen = self.screen
        if screen is None:
            raise RuntimeError("result() called before the start round")
        errcode = screen.errcode.copy()
        used_firth = self.firth.status >= 0
        status = np.where(used_firth, self.firth.status, self.newton.status)
        coef = np.where(used_firth[:, None], self.firth.coef, self.newton.coef)
        info = np.where(used_firth[:, None, None], self.firth.info, self.newton.info)
        fitted = np.flatnonzero(errcode == ERRCODE_OK)
        if np.any(status[fitted] == ACTIVE):
            raise RuntimeError("result() called before every variant was decided")
        failed = fitted[status[fitted] == FAILED]
        errcode[failed] = np.where(used_firth[failed], "FIRTH_CONVERGE_FAIL", "LOGISTIC_CONVERGE_FAIL")
        estimated = fitted[status[fitted] != FAILED]
        beta, se = np.full(m, np.nan), np.full(m, np.nan)
        if len(estimated):
            covariance = inverse_spd(info[estimated])
            variances = np.einsum("mii->mi", covariance)
            invalid = np.any(~np.isfinite(variances[:, 1:]) | (variances[:, 1:] < 1e-20), axis=1)
            with np.errstate(invalid="ignore"):
                sd = np.sqrt(variances)
                correlated = covariance > 0.99999 * sd[:, :, None] * sd[:, None, :]
            correlated &= ~np.eye(p, dtype=bool)
            invalid |= used_firth[estimated] & np.any(correlated, axis=(1, 2))
            errcode[estimated[invalid]] = "INVALID_RESULT"
            valid = estimated[~invalid]
            beta[valid] = coef[valid, p - 1]
            se[valid] = sd[~invalid, p - 1]
            errcode[valid[status[valid] == UNFINISHED]] = "UNFINISHED"
        with np.errstate(invalid="ignore", divide="ignore"):
            z = beta / se
        neg_log10_p = np.where(np.isfinite(z), z_test_neg_log10_p(z), np.nan)
        return AssociationResult(
            test="firth" if self.always_firth else "logistic",
            variants=variants,
            beta=beta,
            se=se,
            stat=z,
            neg_log10_p=neg_log10_p,
            n=np.rint(screen.n).astype(np.int64),
            effect_allele_count=screen.allele_count,
            errcode=errcode.astype(str),
            firth=used_firth,
            info=mach_r2(self._xtx[:, 0, 0], self._xtx[:, 0, p - 1], self._xtx[:, p - 1, p - 1]),
        )
