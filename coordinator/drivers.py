"""Coordinator-side drivers: turn aggregated site outputs into results, one function per model.

A driver receives a :class:`RoundExecutor` and asks it for as many rounds as its algorithm needs
(one for linear regression; several for iterative fits), then solves. Adding a model means a site
analysis in :mod:`engine.analyses` and a driver registered here.
"""

from __future__ import annotations

from typing import Callable

from coordinator.rounds import RoundExecutor
from engine.association import AssociationResult
from engine.linear import LinearLayout
from engine.linear_solve import solve_linear


def run_linear(executor: RoundExecutor) -> AssociationResult:
    """Exact per-variant OLS: one round of sufficient statistics, then the batched solve."""
    layout = LinearLayout(len(executor.config.cohort.covariates) + 1)
    totals = executor.run("linear", layout.width)
    return solve_linear(totals, layout.n_design, executor.harmonised.variants)


DRIVERS: dict[str, Callable[[RoundExecutor], AssociationResult]] = {"linear": run_linear}
