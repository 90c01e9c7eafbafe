"""Differential-privacy mechanisms and accounting, all from OpenDP (the only module importing it).

Everything that draws release noise or converts between privacy measures goes through OpenDP 0.16
(imported on first use, so that agents and tools that never touch DP do not pay for it):

* **Gaussian** noise (:func:`opendp.measurements.make_gaussian`), accounted in zero-concentrated DP
  (ρ-zCDP); the (ε, δ) guarantee comes from OpenDP's ``make_zCDP_to_approxDP`` + ``make_fix_delta``.
* **Laplace** noise (``make_laplace``) where pure ε-DP is asked for; for the site's zCDP budget a pure
  ε-DP release is charged ``ρ = ε²/2`` through OpenDP's ``make_pureDP_to_zCDP``.

Noise is drawn on a *sized* vector domain with discretisation ``k = -20`` (values are rounded to
multiples of 2^-20 before noise is added), which OpenDP's samplers need to be both exact and fast
(~16-25 µs per value, see the shared notes). No numpy randomness is ever used for a release: OpenDP
samples from the operating system's cryptographic source and is built to resist the floating-point
attacks that break naive samplers.

Sensitivities are derived elsewhere (:mod:`engine.privacy.dp_release`, docs/privacy.md); this module only
knows "a vector of ``n_values`` whose neighbours differ by at most Δ in L2 (or L1)".
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

#: Mechanisms a study may request: Gaussian (zCDP) or Laplace (pure ε-DP).
MECHANISMS = ("gaussian", "laplace")
#: Noise granularity 2^K: values are rounded to this grid before noise (OpenDP's ``k``).
DISCRETISATION_K = -20
#: Largest value accepted as a privacy parameter (nothing sensible is above it).
MAX_EPSILON = 1e3


@functools.lru_cache(maxsize=1)
def _opendp() -> Any:
    """OpenDP's prelude, imported on first use (a site that never releases with DP never loads it).

    Features: "contrib" (OpenDP's mechanisms not yet formally vetted: all of those used here) and
    "honest-but-curious" (user-defined privacy maps, used only to convert a *sum* of ρ to (ε, δ)).
    """
    import opendp.prelude as prelude

    prelude.enable_features("contrib", "honest-but-curious")
    return prelude


@dataclass(frozen=True)
class NoiseCalibration:
    """The calibrated noise of one release (the aggregate over all sites).

    Attributes
    ----------
    mechanism
        ``"gaussian"`` or ``"laplace"``.
    epsilon, delta
        What the study asked for (``delta`` is 0 for Laplace).
    sensitivity
        L2 (Gaussian) or L1 (Laplace) sensitivity of the whole release vector.
    scale
        Noise scale of the aggregate: the standard deviation (Gaussian) or ``b`` (Laplace).
    rho
        zCDP charge of the release (OpenDP's privacy map at ``sensitivity``).
    epsilon_achieved
        ε at ``delta`` of the calibrated mechanism (≤ ``epsilon``; for Laplace, the pure ε).
    n_values
        Number of released values (size of the vector domain).
    """

    mechanism: str
    epsilon: float
    delta: float
    sensitivity: float
    scale: float
    rho: float
    epsilon_achieved: float
    n_values: int

    @property
    def variance(self) -> float:
        """Variance of the aggregate noise on each released value."""
        return self.scale ** 2 if self.mechanism == "gaussian" else 2.0 * self.scale ** 2


@functools.lru_cache(maxsize=256)
def _domain(n_values: int) -> Any:
    od = _opendp()
    return od.vector_domain(od.atom_domain(T=float, nan=False), size=n_values)


def _gaussian(n_values: int, scale: float) -> Any:
    od = _opendp()
    return od.m.make_gaussian(_domain(n_values), od.l2_distance(T=float), scale=scale, k=DISCRETISATION_K)


def _laplace(n_values: int, scale: float) -> Any:
    od = _opendp()
    return od.m.make_laplace(_domain(n_values), od.l1_distance(T=float), scale=scale, k=DISCRETISATION_K)


def _check_parameters(mechanism: str, epsilon: float, delta: float, sensitivity: float, n_values: int) -> None:
    if mechanism not in MECHANISMS:
        raise ValueError(f"DP mechanism {mechanism!r} is not one of {list(MECHANISMS)}")
    if not 0.0 < epsilon <= MAX_EPSILON:
        raise ValueError(f"DP epsilon {epsilon!r} must be in (0, {MAX_EPSILON:g}]")
    if mechanism == "gaussian" and not 0.0 < delta < 1.0:
        raise ValueError(f"DP delta {delta!r} must be in (0, 1) for the Gaussian mechanism")
    if not (math.isfinite(sensitivity) and sensitivity > 0.0):
        raise ValueError(f"DP sensitivity {sensitivity!r} must be positive and finite")
    if n_values < 1:
        raise ValueError(f"a DP release needs at least one value, got {n_values}")


def _upper_bound(accepts: Callable[[float], bool], guess: float) -> float:
    """A noise scale the mechanism accepts, from ``guess`` doubled as needed (bounds OpenDP's search,
    whose own exponential search overflows on large sensitivities)."""
    for _ in range(64):
        if accepts(guess):
            return guess
        guess *= 2.0
    raise ValueError(f"no noise scale up to {guess:g} meets the requested privacy")


@functools.lru_cache(maxsize=1024)
def calibrate(mechanism: str, epsilon: float, delta: float, sensitivity: float, n_values: int) -> NoiseCalibration:
    """Smallest noise scale meeting the target, found by OpenDP's binary search on its own privacy map.

    Parameters
    ----------
    mechanism
        ``"gaussian"``: (ε, δ)-DP through ρ-zCDP; ``"laplace"``: pure ε-DP (``delta`` ignored).
    epsilon, delta
        Target guarantee of the release.
    sensitivity
        L2 (Gaussian) or L1 (Laplace) distance between the release vectors of neighbouring datasets.
    n_values
        Length of the release vector.

    Raises
    ------
    ValueError
        Parameters out of range (the callers turn it into a domain error naming the parameter).
    """
    epsilon, delta, sensitivity = float(epsilon), float(delta), float(sensitivity)
    _check_parameters(mechanism, epsilon, delta, sensitivity, n_values)
    od = _opendp()
    if mechanism == "gaussian":
        def gaussian(s: float) -> Any:
            return od.c.make_fix_delta(od.c.make_zCDP_to_approxDP(_gaussian(n_values, s)), delta)

        # ~ the textbook Gaussian scale, times a margin; doubled until OpenDP's map accepts it.
        upper = _upper_bound(lambda s: gaussian(s).check(sensitivity, (epsilon, delta)),
                             sensitivity * (2.0 + 20.0 * math.sqrt(math.log(1.0 / delta)) / epsilon))
        scale = od.binary_search_param(gaussian, d_in=sensitivity, d_out=(epsilon, delta), bounds=(0.0, upper))
        measurement = _gaussian(n_values, scale)
        rho = float(measurement.map(sensitivity))
        achieved = float(od.c.make_fix_delta(od.c.make_zCDP_to_approxDP(measurement), delta).map(sensitivity)[0])
        return NoiseCalibration(mechanism, epsilon, delta, sensitivity, float(scale), rho, achieved, n_values)
    upper = _upper_bound(lambda b: _laplace(n_values, b).check(sensitivity, epsilon), 2.0 * sensitivity / epsilon + 1.0)
    scale = od.binary_search_param(lambda b: _laplace(n_values, b), d_in=sensitivity, d_out=epsilon,
                                   bounds=(0.0, upper))
    measurement = _laplace(n_values, scale)
    pure = float(measurement.map(sensitivity))
    rho = float(od.c.make_pureDP_to_zCDP(measurement).map(sensitivity))
    return NoiseCalibration(mechanism, epsilon, 0.0, sensitivity, float(scale), rho, pure, n_values)


def _rho_measurement(rho: float) -> Any:
    """A stand-in ρ-zCDP measurement whose privacy map is ``rho`` (accounting only: never run)."""
    rho = float(rho)
    od = _opendp()
    return od.m.make_user_measurement(
        od.atom_domain(T=float, nan=False), od.absolute_distance(T=float), od.zero_concentrated_divergence(),
        function=lambda x: x, privacy_map=lambda d_in: rho, TO=float)


def epsilon_from_rho(rho: float, delta: float) -> float:
    """ε at ``delta`` of a ρ-zCDP guarantee, by OpenDP's conversion (0 for ρ = 0)."""
    if rho <= 0.0:
        return 0.0
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta {delta!r} must be in (0, 1) to express zCDP as (epsilon, delta)")
    od = _opendp()
    converted = od.c.make_fix_delta(od.c.make_zCDP_to_approxDP(_rho_measurement(rho)), delta)
    return float(converted.map(1.0)[0])


@functools.lru_cache(maxsize=256)
def rho_from_epsilon(epsilon: float, delta: float) -> float:
    """Largest ρ whose OpenDP (ε, δ) conversion stays within ``epsilon`` at ``delta``."""
    if not 0.0 < epsilon <= MAX_EPSILON or not 0.0 < delta < 1.0:
        raise ValueError(f"budget epsilon {epsilon!r} must be in (0, {MAX_EPSILON:g}] and delta {delta!r} in (0, 1)")
    return float(_opendp().binary_search(lambda rho: epsilon_from_rho(rho, delta) <= epsilon, bounds=(0.0, float(epsilon))))


def sample_noise(mechanism: str, scale: float, values: np.ndarray) -> np.ndarray:
    """``values`` plus independent OpenDP noise of ``scale`` on every element (same shape, float64).

    This is a *share* of a release's noise: the caller (:mod:`engine.privacy.dp_release`) chooses ``scale``
    so that the shares of the honest sites add up to the calibrated noise. ``scale == 0`` returns the
    values unchanged (a site that carries no share, e.g. under Laplace noise from designated sites).
    """
    flat = np.ascontiguousarray(values, dtype=np.float64).ravel()
    if scale == 0.0 or flat.size == 0:
        return flat.reshape(np.shape(values)).copy()
    if not (math.isfinite(scale) and scale > 0.0):
        raise ValueError(f"noise scale {scale!r} must be positive and finite")
    if not np.all(np.isfinite(flat)):
        raise ValueError("cannot add DP noise to non-finite values")
    make = _gaussian if mechanism == "gaussian" else _laplace if mechanism == "laplace" else None
    if make is None:
        raise ValueError(f"DP mechanism {mechanism!r} is not one of {list(MECHANISMS)}")
    noisy = make(flat.size, float(scale))(flat.tolist())
    return np.asarray(noisy, dtype=np.float64).reshape(np.shape(values))
