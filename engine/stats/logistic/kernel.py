"""Per-variant logistic and Firth regression statistics at one site, given the current coefficients.

Model for variant j over the samples observed at j (PLINK 2's complete-case rule)::

    logit P(y = 1) = C b_j + g_j beta_j,    C = [1, covariates]  (n x K),  x_i = [c_i, g_ij]  (P = K + 1)

The coordinator runs Newton's method for every variant at once: each iteration is a round in which
it sends each variant's coefficients ``[b_j, beta_j]`` and every site returns, per variant, sums over
its samples that add up across sites:

- the Fisher information ``X'WX`` (upper triangle, ``W = diag(p (1 - p))``) and the score ``X'(y - p)``;
- for Firth's penalised likelihood also the log-likelihood ``sum y log p + (1 - y) log(1 - p)`` and the
  third moments ``T_abc = sum_i p_i (1 - p_i) (1/2 - p_i) x_ia x_ib x_ic`` (unique ``a <= b <= c``).

Firth's modified score ``U*_a = sum_i x_ia (y_i - p_i + h_i (1/2 - p_i))`` needs the hat diagonal
``h_i = w_i x_i' (X'WX)^-1 x_i`` of the *pooled* information matrix, which no site knows. But
``sum_i x_ia w_i (1/2 - p_i) x_i' A x_i = sum_bc T_abc A_bc`` for any matrix ``A``, so the coordinator
gets ``U*`` exactly from the summed ``T`` and its own ``(X'WX)^-1``, in the same round.

The genotype enters as the allele count of the study's effect allele (flipped by the caller where a
site stores the other allele). All work is vectorised over blocks of variants: one GEMM for the
linear predictors, elementwise ``exp`` over a cache-sized ``(n, chunk)`` panel, and thin GEMMs of the
per-sample covariate products against the weight panels. The coordinator's solver is
:mod:`engine.stats.logistic.solve`.

Precision. For Newton's statistics the linear predictors, probabilities and weights are evaluated in
float32 (numpy's float64 ``exp`` is not vectorised), and the information ``X'WX`` is summed in float32
GEMMs; the score ``X'(y - p)`` is summed in float64. Each sample's ``p``, ``1 - p`` and weight carry a
relative error of ~1e-7, and each information entry ~1e-7 of its largest terms' sum: the fitted
coefficients move by ~1e-9 of their standard error (Newton's fixed point is the root of the score)
and the standard errors by ~1e-7 relative, far below PLINK 2's own single-precision logistic
regression. Firth's statistics stay in float64 throughout: its step halving compares penalised
log-likelihoods to 1e-11 relative; so do Newton's statistics on PLINK's path from 0 (``exact``), which
decides failures and ``UNFINISHED`` on quasi-separated variants, where the information is nearly
singular. The start round (:func:`start_statistics`) is exact in float64.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from itertools import combinations_with_replacement

import numpy as np

from engine.stats.linear.kernel import missing_calls
from engine.stats.statistic import DesignLayout

#: values per elementwise panel (0.5 MiB per float32 buffer, 1 MiB per float64 one); measured faster than
#: 2^16 and 2^18 with 3,333 samples on the benchmark machine (512 KiB L2 per core, 32 MiB L3).
_PANEL_VALUES = 1 << 17
#: float64 values per GEMM panel of :func:`start_statistics` (~4 MiB: wider panels make the thin GEMMs faster).
GEMM_PANEL_VALUES = 1 << 19
#: ``exp(-eta)`` is evaluated with ``-eta`` capped here (no overflow; p is then 0 to double precision).
ETA_LIMIT = 700.0
#: The same cap for float32 (``exp(80)`` = 5.5e34 < 3.4e38; p and w are then ~1.8e-35, still normal).
ETA_LIMIT_FLOAT32 = 80.0


@dataclass(frozen=True)
class LogisticLayout(DesignLayout):
    """Column layout of the per-variant statistics for ``n_design`` design columns (intercept included).

    Columns: upper triangle of ``X'WX`` (row-major, ``np.triu_indices(P)``), then ``X'(y - p)`` (P);
    with ``firth`` also the log-likelihood (1) and the third moments (``P(P+1)(P+2)/6``, in
    ``combinations_with_replacement(range(P), 3)`` order). The genotype is predictor ``P - 1``.
    """

    firth: bool = False

    @property
    def n_info(self) -> int:
        p = self.n_predictors
        return p * (p + 1) // 2

    @property
    def grad_slice(self) -> slice:
        return slice(self.n_info, self.n_info + self.n_predictors)

    @property
    def loglik_column(self) -> int:
        if not self.firth:
            raise ValueError("only the Firth layout carries a log-likelihood")
        return self.n_info + self.n_predictors

    @cached_property
    def triples(self) -> np.ndarray:
        """Unique index triples ``a <= b <= c`` of the third moments, shape ``(n_triples, 3)``."""
        return np.array(list(combinations_with_replacement(range(self.n_predictors), 3)), dtype=np.int64)

    @property
    def tensor_slice(self) -> slice:
        start = self.loglik_column + 1
        return slice(start, start + len(self.triples))

    @property
    def width(self) -> int:
        return self.tensor_slice.stop if self.firth else self.n_info + self.n_predictors

    @cached_property
    def triple_of(self) -> np.ndarray:
        """``(P, P, P)`` index of each ordered triple's unique column (for expanding the symmetric tensor)."""
        p = self.n_predictors
        out = np.empty((p, p, p), dtype=np.int64)
        for column, triple in enumerate(self.triples.tolist()):
            for a, b, c in {(x, y, z) for x in triple for y in triple for z in triple
                            if sorted((x, y, z)) == triple}:
                out[a, b, c] = column
        return out

    def unpack_info(self, packed: np.ndarray) -> np.ndarray:
        """Symmetric ``X'WX``, shape ``(m, P, P)``, from packed rows ``(m, width)``."""
        p = self.n_predictors
        rows, cols = self.triu
        info = np.empty((len(packed), p, p))
        info[:, rows, cols] = packed[:, : self.n_info]
        info[:, cols, rows] = packed[:, : self.n_info]
        return info

    def unpack_tensor(self, packed: np.ndarray) -> np.ndarray:
        """Symmetric third moments ``(m, P, P, P)`` from packed Firth rows."""
        unique = packed[:, self.tensor_slice]
        return unique[:, self.triple_of]

    @cached_property
    def _sources(self) -> tuple[np.ndarray, np.ndarray]:
        """For each info column: (number of genotype factors, index into the covariate-product columns)."""
        k = self.n_design
        design_pairs = {pair: i for i, pair in enumerate(zip(*(x.tolist() for x in np.triu_indices(k))))}
        genotype_count, source = [], []
        for a, b in zip(self.triu[0].tolist(), self.triu[1].tolist()):
            count = (a == k) + (b == k)
            genotype_count.append(count)
            source.append(design_pairs[(a, b)] if count == 0 else (a if count == 1 else 0))
        return np.array(genotype_count), np.array(source)

    @cached_property
    def _triple_sources(self) -> tuple[np.ndarray, np.ndarray]:
        """For each third-moment column: (number of genotype factors, index into that product family)."""
        k = self.n_design
        pairs = {pair: i for i, pair in enumerate(zip(*(x.tolist() for x in np.triu_indices(k))))}
        design_triples = {tuple(t): i for i, t in enumerate(combinations_with_replacement(range(k), 3))}
        counts, source = [], []
        for triple in self.triples.tolist():
            count = triple.count(k)
            rest = tuple(x for x in triple if x != k)
            counts.append(count)
            source.append(design_triples[rest] if count == 0 else pairs[rest] if count == 1
                          else rest[0] if count == 2 else 0)
        return np.array(counts), np.array(source)


@dataclass(frozen=True)
class DesignProducts:
    """Per-sample products of design columns, computed once per task.

    ``pairs`` ``(n, K(K+1)/2)``: ``c_a c_b`` for ``np.triu_indices(K)``; ``triples``
    ``(n, K(K+1)(K+2)/6)`` (Firth only, else ``None``): ``c_a c_b c_c`` for
    ``combinations_with_replacement(range(K), 3)``.
    """

    pairs: np.ndarray
    triples: np.ndarray | None


def design_products(design: np.ndarray, firth: bool) -> DesignProducts:
    """Products of the design columns needed by :func:`logistic_statistics` (see :class:`DesignProducts`)."""
    k = design.shape[1]
    rows, cols = np.triu_indices(k)
    pairs = np.ascontiguousarray(design[:, rows] * design[:, cols])
    triples = None
    if firth:
        index = np.array(list(combinations_with_replacement(range(k), 3)), dtype=np.int64)
        triples = np.ascontiguousarray(design[:, index[:, 0]] * design[:, index[:, 1]] * design[:, index[:, 2]])
    return DesignProducts(pairs, triples)


def logistic_statistics(genotypes: np.ndarray, design: np.ndarray, y: np.ndarray, coef: np.ndarray, *,
                        firth: bool = False, exact: bool = False, products: DesignProducts | None = None) -> np.ndarray:
    """Per-variant sums over this site's samples at the given coefficients.

    Parameters
    ----------
    genotypes
        int8 ``(n, m)`` counts (0/1/2) of the study's effect allele, negative for a missing call; or
        float dosages, NaN for a missing dosage.
    design
        ``(n, K)`` intercept and covariates of the analysed samples.
    y
        ``(n,)`` phenotype, 0 = control, 1 = case.
    coef
        ``(m, P)`` coefficients per variant: ``K`` design coefficients, then the genotype's.
    firth
        Also return the log-likelihood and the third moments (see the module docstring); float64.
    exact
        Newton's statistics in float64 throughout (for PLINK's path from 0); otherwise float32
        probabilities and information (see the module docstring).
    products
        ``design_products(design, firth)`` if already computed (it is the same for every block).

    Returns
    -------
    numpy.ndarray
        ``(m, LogisticLayout(K, firth).width)`` float64.
    """
    n, m = genotypes.shape
    k = design.shape[1]
    layout = LogisticLayout(k, firth)
    if coef.shape != (m, k + 1):
        raise ValueError(f"coef has shape {coef.shape}, expected {(m, k + 1)}")
    if products is None or (firth and products.triples is None):
        products = design_products(design, firth)
    out = np.empty((m, layout.width))
    raw = np.asfortranarray(genotypes).T  # (m, n) C-contiguous view: variant-major
    chunk = max(8, min(m, _PANEL_VALUES // max(n, 1)))
    panel = (_Float64Panel if firth or exact else _NewtonPanel)(chunk, design, y, products)
    for start in range(0, m, chunk):
        stop = min(start + chunk, m)
        out[start:stop] = panel(raw[start:stop], coef[start:stop], layout)
    return out


def covariate_statistics(design: np.ndarray, y: np.ndarray, coef: np.ndarray,
                         products: DesignProducts | None = None) -> np.ndarray:
    """Statistics of the covariate-only model over all of this site's samples, per coefficient row.

    Used for PLINK 2's check that the covariates alone do not separate cases from controls.

    Parameters
    ----------
    design
        ``(n, K)`` intercept and covariates.
    y
        ``(n,)`` phenotype, 0/1.
    coef
        ``(m, K)`` coefficient vectors to evaluate (usually one).
    products
        ``design_products(design, firth=True)`` if already computed.

    Returns
    -------
    numpy.ndarray
        ``(m, LogisticLayout(K - 1, firth=True).width)``: the design's last column takes the place of
        the genotype in the layout.
    """
    k = design.shape[1]
    if coef.ndim != 2 or coef.shape[1] != k:
        raise ValueError(f"coef has shape {coef.shape}, expected (m, {k})")
    if products is None or products.triples is None:
        products = design_products(design, firth=True)
    layout = LogisticLayout(k - 1, firth=True)
    eta = np.clip(design @ coef.T, -ETA_LIMIT, ETA_LIMIT)  # (n, m)
    z = np.exp(-eta)
    p = 1.0 / (1.0 + z)
    w = z * p * p
    out = np.empty((coef.shape[0], layout.width))
    out[:, : layout.n_info] = (products.pairs.T @ w).T
    out[:, layout.grad_slice] = ((y[:, None] - p).T @ design)
    out[:, layout.loglik_column] = -(np.log(1.0 + z) + (1.0 - y)[:, None] * eta).sum(axis=0)
    triples = products.triples
    assert triples is not None
    out[:, layout.tensor_slice] = (triples.T @ (w * (0.5 - p))).T
    return out


class _NewtonPanel:
    """Newton's statistics for cache-sized panels of ``c`` variants, in float32 where that is safe.

    The linear predictors, probabilities and weights are float32 (numpy's float64 ``exp`` is not
    vectorised), and so are the sums of the information ``X'WX`` (thin float32 GEMMs, relative error
    ~1e-7 per entry); the score ``X'(y - p)``, whose root is the estimate, is summed in float64. The
    buffers ``(chunk, n)`` are reused across panels (fresh multi-MiB arrays cost page faults).
    """

    def __init__(self, chunk: int, design: np.ndarray, y: np.ndarray, products: DesignProducts) -> None:
        n, k = design.shape
        self.k = k
        self.design = design
        self.design32 = design.astype(np.float32)
        self.design32_t = np.ascontiguousarray(self.design32.T)
        self.pairs32 = products.pairs.astype(np.float32)
        self.y32 = y.astype(np.float32)
        self.g32, self.eta, self.z, self.p = (np.empty((chunk, n), dtype=np.float32) for _ in range(4))
        self.g, self.r = np.empty((chunk, n)), np.empty((chunk, n))

    def __call__(self, raw: np.ndarray, coef: np.ndarray, layout: LogisticLayout) -> np.ndarray:
        """Statistics ``(c, width)`` of the variants in the rows of ``raw`` ``(c, n)`` at ``coef`` ``(c, P)``."""
        k, c = self.k, raw.shape[0]
        g32, eta, z, p, g, r = (buffer[:c] for buffer in (self.g32, self.eta, self.z, self.p, self.g, self.r))
        np.copyto(g32, raw, casting="unsafe")
        missing = np.flatnonzero(missing_calls(raw))
        g32.reshape(-1)[missing] = 0.0
        np.copyto(g, g32)
        # Minus the linear predictors; exp(-eta) = z, p = 1 / (1 + z) and 1 - p = z p (accurate when p
        # is close to 1); exp overflows beyond the limit, and its underflow to 0 means p = 1, w = 0.
        np.matmul(-coef[:, :k].astype(np.float32), self.design32_t, out=eta)
        np.multiply(g32, -coef[:, k: k + 1].astype(np.float32), out=z)
        eta += z
        np.minimum(eta, ETA_LIMIT_FLOAT32, out=eta)
        np.exp(eta, out=z)
        np.add(z, 1.0, out=p)
        np.divide(1.0, p, out=p)
        np.subtract(self.y32, p, out=eta)  # y - p, as accurate as p itself
        eta.reshape(-1)[missing] = 0.0
        np.copyto(r, eta)
        w = z
        w *= p
        w *= p
        w.reshape(-1)[missing] = 0.0
        out = np.empty((c, layout.width))
        wg = p
        np.multiply(w, g32, out=wg)
        fill_statistics(out, layout, w @ self.pairs32, wg @ self.design32, np.add.reduce(wg * g32, axis=1, dtype=np.float64),
              r @ self.design, np.einsum("ij,ij->i", r, g))
        return out


class _Float64Panel:
    """Newton's or Firth's statistics for cache-sized panels, all in float64 (Firth's step halving compares
    penalised log-likelihoods to 1e-11 relative; PLINK's path from 0 decides failures on fine
    differences); buffers ``(chunk, n)`` reused across panels."""

    def __init__(self, chunk: int, design: np.ndarray, y: np.ndarray, products: DesignProducts) -> None:
        n, k = design.shape
        self.k, self.design, self.y, self.products = k, design, y, products
        self.g, self.eta, self.z, self.p, self.w = (np.empty((chunk, n)) for _ in range(5))
        self.stacked = np.empty((2 * chunk, n))  # [w g; y - p]

    def __call__(self, raw: np.ndarray, coef: np.ndarray, layout: LogisticLayout) -> np.ndarray:
        """Statistics ``(c, width)`` of the variants in the rows of ``raw`` ``(c, n)`` at ``coef`` ``(c, P)``."""
        k, c, design, y, products = self.k, raw.shape[0], self.design, self.y, self.products
        g, eta, z, p, w = (buffer[:c] for buffer in (self.g, self.eta, self.z, self.p, self.w))
        stacked = self.stacked[: 2 * c]
        np.copyto(g, raw, casting="unsafe")
        missing = np.flatnonzero(missing_calls(raw))
        g.reshape(-1)[missing] = 0.0
        np.matmul(-coef[:, :k], design.T, out=eta)  # minus the linear predictors (see _NewtonPanel)
        np.multiply(g, -coef[:, k: k + 1], out=z)
        eta += z
        np.minimum(eta, ETA_LIMIT, out=eta)
        np.exp(eta, out=z)
        np.add(z, 1.0, out=p)
        np.divide(1.0, p, out=p)
        np.multiply(z, p, out=w)
        w *= p
        w.reshape(-1)[missing] = 0.0
        wg, r = stacked[:c], stacked[c:]
        np.multiply(w, g, out=wg)
        np.subtract(y, p, out=r)
        r.reshape(-1)[missing] = 0.0
        out = np.empty((c, layout.width))
        cg_r = stacked @ design  # (2c, K): C'(w g) then C'(y - p)
        fill_statistics(out, layout, w @ products.pairs, cg_r[:c], np.einsum("ij,ij->i", wg, g), cg_r[c:],
              np.einsum("ij,ij->i", r, g))
        if not layout.firth:
            return out
        # log-likelihood: log p = -log(1 + z); log(1 - p) = -eta - log(1 + z)  (``eta`` holds -eta)
        ll = np.log(p)
        np.negative(ll, out=ll)
        ll -= (1.0 - y) * eta
        ll.reshape(-1)[missing] = 0.0
        out[:, layout.loglik_column] = -ll.sum(axis=1)
        u = w * (0.5 - p)  # zero where missing, as w is
        ug = u * g
        ugg = ug * g
        assert products.triples is not None  # design_products(design, firth=True)
        families = (u @ products.triples, ug @ products.pairs, ugg @ design,
                    np.einsum("ij,ij->i", ugg, g)[:, None])
        t_counts, t_source = layout._triple_sources
        tensor = layout.tensor_slice
        for family, values in enumerate(families):
            columns = np.flatnonzero(t_counts == family)
            out[:, tensor.start + columns] = values[:, t_source[columns]]
        return out


def fill_statistics(out: np.ndarray, layout: LogisticLayout, cwc: np.ndarray, cwg: np.ndarray, gwg: np.ndarray,
          c_resid: np.ndarray, g_resid: np.ndarray) -> None:
    """Pack ``X'WX`` (from ``C'WC`` ``(m, K(K+1)/2)``, ``C'Wg`` ``(m, K)``, ``g'Wg`` ``(m,)``) and the score
    ``X'(y - p)`` (from ``C'(y - p)`` ``(m, K)``, ``g'(y - p)`` ``(m,)``) into the first columns of ``out``."""
    k = layout.n_design
    counts, source = layout._sources
    for family, values in ((0, cwc), (1, cwg)):
        columns = np.flatnonzero(counts == family)
        out[:, columns] = values[:, source[columns]]
    out[:, np.flatnonzero(counts == 2)] = gwg[:, None]
    grad = layout.grad_slice
    out[:, grad.start: grad.start + k] = c_resid
    out[:, grad.start + k] = g_resid
