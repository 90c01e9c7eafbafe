"""Federated PCA, the coordinator side: frequencies, the Krylov iteration, and the released results.

The coordinator never sees a genotype or a sample score. It sees, per round, the aggregate
``A V = sum_k Z_k' Z_k V`` ``(M, b)`` for a block ``V`` it chose (see :mod:`engine.stats.pca.kernel`), where
``A = Z' Z`` is the ``(M, M)`` cross-product of the standardised genotypes over every sample of
every site. :class:`BlockKrylov` is block Lanczos with full reorthogonalisation: every new block is
the part of the last product orthogonal to all earlier blocks, so the blocks ``Q = [V_0 .. V_r]`` are
orthonormal and the rounds' products are exactly ``A Q``. The Rayleigh-Ritz step diagonalises the
small ``Q' A Q``: its top eigenpairs ``(theta, y)`` give loadings ``w = Q y`` and the eigenvalues of
PLINK 2's relationship matrix, ``theta / M``. The residual ``|A w - theta w| / theta`` of each pair is
known from the same products, so the iteration stops when the requested components have converged.

PLINK 2's ``--pca approx`` is the randomised algorithm of Galinsky et al. (2016) with ``2k`` start
vectors and ``k + 1`` passes; :func:`krylov_plan` reproduces that budget for ``approx`` and otherwise
iterates to convergence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.errors import InputError
from engine.stats.qc.counts import GenotypeCounts


def standardisation(counts: GenotypeCounts) -> np.ndarray:
    """Per-variant ``[2p, 1 / sqrt(2p(1-p))]`` ``(m, 2)`` from pooled counts, study orientation.

    ``p`` is the effect-allele frequency over every called allele of every sample. A constant
    variant (or one without calls) gets centre ``2p`` (0 without calls) and scale 0: it contributes
    nothing to the relationship matrix but still counts in ``M``, as in PLINK 2.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        freq = counts.effect_allele_frequency
        variance = 2.0 * freq * (1.0 - freq)
        scale = np.where(variance > 0, 1.0 / np.sqrt(variance), 0.0)
    centre = np.where(np.isfinite(freq), 2.0 * freq, 0.0)
    return np.column_stack([centre, np.nan_to_num(scale)])


def major_is_effect(counts: GenotypeCounts) -> np.ndarray:
    """bool ``(m,)``: PLINK 2's major allele is the effect (ALT) allele.

    PLINK 2 computes the REF frequency as ``ref_count * (1 / allele_count)`` and calls ALT major
    when that is below 0.5, so exact ties fall to either side depending on rounding; this reproduces it.
    """
    other = (2 * counts.hom_other + counts.het).astype(np.float64)
    total = counts.allele_observations.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ref_freq = other * (1.0 / total)
    return np.nan_to_num(ref_freq, nan=1.0) < 0.5


@dataclass(frozen=True)
class KrylovPlan:
    """How many start vectors and rounds a PCA may use, and when it has converged."""

    components: int
    block: int
    max_rounds: int
    tolerance: float | None  # None: run all rounds (PLINK's approx budget)


def krylov_plan(components: int, n_samples: int, n_variants: int, *, approx: bool = False,
                block: int | None = None, max_rounds: int | None = None, tolerance: float = 1e-4) -> KrylovPlan:
    """The iteration budget for ``components`` PCs of ``n_samples`` samples and ``n_variants`` variants.

    ``approx``: PLINK 2's ``--pca approx`` budget (``2k`` vectors, ``k + 1`` rounds, no early stop).
    Otherwise ``max(2k, k + 10)`` vectors until every requested pair has a relative residual below
    ``tolerance``, at most 30 rounds. The Krylov space never exceeds the number of variants.

    Raises
    ------
    InputError
        Fewer samples or variants than components.
    """
    if components < 1:
        raise InputError(f"--pca needs at least one component, got {components}")
    if n_samples < components or n_variants < components:
        raise InputError(f"--pca {components}: too few samples ({n_samples}) or variants ({n_variants}) "
                         f"to compute {components} principal components")
    if block is None:
        block = 2 * components if approx else max(2 * components, components + 10)
    block = max(components, min(block, n_variants))
    if max_rounds is None:
        max_rounds = components + 1 if approx else 30
    max_rounds = max(1, min(max_rounds, -(-n_variants // block)))
    return KrylovPlan(components, block, max_rounds, None if approx else tolerance)


@dataclass(frozen=True)
class RitzPairs:
    """The current approximation: ``theta`` ``(k,)`` (eigenvalues of ``Z'Z``, descending), unit
    loadings ``w`` ``(M, k)`` (effect-allele orientation) and relative residuals ``(k,)``."""

    theta: np.ndarray
    loadings: np.ndarray
    residuals: np.ndarray


class BlockKrylov:
    """Block Lanczos with full reorthogonalisation on ``A`` (``M x M``), seen only through ``A V``.

    Use :meth:`request` for the next block to send, then :meth:`update` with the aggregated product.
    Only the orthonormal blocks ``Q`` ``(M, s)`` and the projection ``T = Q' A Q`` ``(s, s)`` are kept:
    ``A Q = Q T + X E'``, where ``X`` is the last product's part orthogonal to ``Q``, so a Ritz pair's
    residual is ``|X y_last|`` without storing the products. ``rng`` draws the start block (the
    coordinator's choice; it carries no data).
    """

    def __init__(self, n_variants: int, plan: KrylovPlan, rng: np.random.Generator) -> None:
        self.plan = plan
        self.n_variants = n_variants
        start = rng.standard_normal((n_variants, plan.block))
        self._next: np.ndarray | None = np.linalg.qr(start)[0]
        self._basis = np.zeros((n_variants, 0))
        self._projection = np.zeros((0, 0))
        self.rounds = 0
        self.ritz: RitzPairs | None = None

    @property
    def dimension(self) -> int:
        return self._projection.shape[0]

    def request(self) -> np.ndarray | None:
        """The next block ``V`` ``(M, b)`` (orthonormal, orthogonal to every earlier block), or
        ``None`` when the iteration is done (converged, budget spent, or the space is exhausted)."""
        if self._next is None or self.rounds >= self.plan.max_rounds:
            return None
        if self.plan.tolerance is not None and self.ritz is not None and \
                np.all(self.ritz.residuals <= self.plan.tolerance):
            return None
        return self._next

    def update(self, product: np.ndarray) -> None:
        """Record ``A V`` ``(M, b)`` for the block last returned by :meth:`request`."""
        block = self._next
        if block is None or product.shape != block.shape or not np.all(np.isfinite(product)):
            raise InputError(f"PCA round returned a product of shape {product.shape} (expected "
                             f"{None if block is None else block.shape}) or non-finite values")
        self._basis = np.hstack([self._basis, block])
        self.rounds += 1
        s, b = self.dimension, block.shape[1]
        coupling = self._project(product)  # Q' A V, (s + b, b)
        projection = np.zeros((s + b, s + b))
        projection[:s, :s] = self._projection
        projection[:, s:] = coupling
        projection[s:, :] = coupling.T
        self._projection = (projection + projection.T) / 2.0
        outside = product - self._combine(coupling)
        outside -= self._combine(self._project(outside))  # twice is enough (Kahan-Parlett)
        self.ritz = self._ritz(outside, b)
        self._next = _orthonormal(outside, float(np.linalg.norm(product)))
        if self._next is not None:
            self._next -= self._combine(self._project(self._next))

    def _project(self, x: np.ndarray) -> np.ndarray:
        return self._basis.T @ x

    def _combine(self, coefficients: np.ndarray) -> np.ndarray:
        return self._basis @ coefficients

    def _ritz(self, outside: np.ndarray, last: int) -> RitzPairs:
        theta, vectors = np.linalg.eigh(self._projection)
        order = np.argsort(theta)[::-1][: self.plan.components]
        theta, vectors = theta[order], vectors[:, order]
        residual = np.linalg.norm(outside @ vectors[-last:], axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            relative = np.nan_to_num(residual / np.abs(theta), nan=np.inf)
        return RitzPairs(theta=theta, loadings=self._combine(vectors), residuals=relative)

    def result(self) -> RitzPairs:
        if self.ritz is None:
            raise InputError("the PCA ran no round")
        return self.ritz


def _orthonormal(residual: np.ndarray, scale: float) -> np.ndarray | None:
    """An orthonormal basis of ``residual``'s columns, dropping numerically null directions."""
    if scale == 0.0:
        return None
    left, singular, _ = np.linalg.svd(residual, full_matrices=False)
    keep = singular > 1e-10 * scale
    return left[:, keep] if np.any(keep) else None


@dataclass(frozen=True)
class PcaResult:
    """What a federated PCA releases.

    ``eigenvalues`` ``(k,)`` of PLINK 2's variance-standardised relationship matrix; ``loadings``
    ``(M, k)``: PLINK 2's variant weights ``Z' u / sqrt(eigenvalue)`` for the effect (ALT) allele,
    where ``u`` are the unit sample eigenvectors (which stay at the sites); ``n_variants`` is ``M``;
    ``residuals`` are the relative residuals ``|A w - theta w| / theta`` measured in the score round;
    ``converged`` whether the iteration met its tolerance (always True for PLINK's approx budget).
    """

    eigenvalues: np.ndarray
    loadings: np.ndarray
    n_variants: int
    rounds: int
    residuals: np.ndarray
    converged: bool


def orient_signs(loadings: np.ndarray) -> np.ndarray:
    """±1 per component, making each component's largest-magnitude loading positive (eigenvectors
    have no sign of their own; this makes the output deterministic)."""
    if loadings.shape[0] == 0:
        return np.ones(loadings.shape[1])
    largest = loadings[np.argmax(np.abs(loadings), axis=0), np.arange(loadings.shape[1])]
    return np.where(largest < 0, -1.0, 1.0)


def score_inputs(ritz: RitzPairs) -> np.ndarray:
    """The last round's input ``W / sqrt(theta)`` ``(M, k)``: with it, each site's first-pass product
    ``Z_k W / sqrt(theta)`` is its own rows of the unit sample eigenvectors."""
    theta = np.where(ritz.theta > 0, ritz.theta, np.inf)
    return ritz.loadings * orient_signs(ritz.loadings) / np.sqrt(theta)


def finish(ritz: RitzPairs, final_product: np.ndarray, n_variants: int, rounds: int,
           tolerance: float | None) -> PcaResult:
    """The released result from the score round's aggregate ``Z' U`` ``(M, k)``.

    ``U`` are the unit sample eigenvectors the sites now hold, so ``Z' U / sqrt(lambda)`` are PLINK
    2's variant weights, computed from exactly the scores the sites kept; and since
    ``Z' U = A w / sqrt(theta)``, the round also measures each pair's true residual
    ``|A w - theta w| / theta``.
    """
    theta = np.where(ritz.theta > 0, ritz.theta, np.inf)
    sigma = np.sqrt(theta)
    oriented = ritz.loadings * orient_signs(ritz.loadings)
    residuals = np.linalg.norm(final_product - oriented * sigma, axis=0) / sigma
    eigenvalues = ritz.theta / n_variants
    loadings = final_product * np.sqrt(n_variants) / sigma  # Z'u / sqrt(theta / M)
    converged = tolerance is None or bool(np.all(ritz.residuals <= tolerance))
    return PcaResult(eigenvalues=eigenvalues, loadings=loadings, n_variants=n_variants, rounds=rounds,
                     residuals=residuals, converged=converged)
