"""Site-enforced differential-privacy budgets: the policy, the admission rule, what remains.

A site's dataset has a budget ``(epsilon, delta)`` (``[budget]`` in site.toml), optionally capped per
study and per requester. Budgets are accounted in zero-concentrated DP: every DP release costs its
ρ (OpenDP's privacy map of the calibrated mechanism; ε²/2 for pure ε-DP Laplace), charges add up,
and the budget in ρ is the largest ρ whose OpenDP conversion to (ε, δ) stays within the budget's ε
at its δ. Summing ρ over adaptively chosen releases is a valid zCDP filter (Whitehouse et al. 2023),
so the whole history is ``(epsilon, delta)``-DP for the dataset. The configuration gives the budget;
the ledger gives the spending, so budgets accumulate across restarts and re-provisioning.

Admission happens inside one ledger transaction, before any computation: the request is refused
(and the refusal recorded) if it would take any scope past its budget, otherwise it is charged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from engine.privacy import dp
from engine.config_tables import checked_table
from engine.errors import BudgetExceededError, ConfigError, PrivacyError
from engine.audit.ledger import Ledger, LedgerEntry, _Appender

#: Relative slack on ρ comparisons: a request calibrated to exactly the remaining budget is admitted.
RHO_TOLERANCE = 1e-9


@dataclass(frozen=True)
class BudgetPolicy:
    """``[budget]`` of a site config: totals in (ε, δ) at one δ, optional caps, and whether every
    task must be differentially private."""

    epsilon: float
    delta: float = 1e-6
    study_epsilon: float | None = None
    requester_epsilon: float | None = None
    require_dp: bool = False

    def rho(self, epsilon: float) -> float:
        """The zCDP budget equivalent to ``epsilon`` at this policy's δ."""
        return dp.rho_from_epsilon(epsilon, self.delta)

    def to_json(self) -> str:
        return json.dumps({"epsilon": self.epsilon, "delta": self.delta, "study_epsilon": self.study_epsilon,
                           "requester_epsilon": self.requester_epsilon, "require_dp": self.require_dp},
                          sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Charge:
    """What one task costs: its mechanism (``exact`` without DP), zCDP ρ and the (ε, δ) it was asked with."""

    mechanism: str
    rho: float = 0.0
    epsilon: float = 0.0
    delta: float = 0.0

    @property
    def is_dp(self) -> bool:
        return self.mechanism != "exact"


EXACT = Charge("exact")


@dataclass(frozen=True)
class Scope:
    """One budget a request is checked against: the dataset's, a study's or a requester's."""

    kind: str  # "dataset" | "study" | "requester"
    name: str
    epsilon: float
    rho_total: float
    rho_spent: float

    @property
    def rho_remaining(self) -> float:
        return max(self.rho_total - self.rho_spent, 0.0)


def scopes(appender: _Appender, policy: BudgetPolicy, *, study: str, requester: str | None) -> list[Scope]:
    """The dataset budget and the configured caps that apply to ``study`` and ``requester``."""
    dataset = appender.ledger.dataset
    found = [Scope("dataset", dataset, policy.epsilon, policy.rho(policy.epsilon),
                   appender.rho_spent(dataset=dataset))]
    if policy.study_epsilon is not None and study:
        found.append(Scope("study", study, policy.study_epsilon, policy.rho(policy.study_epsilon),
                           appender.rho_spent(dataset=dataset, study=study)))
    if policy.requester_epsilon is not None and requester is not None:
        found.append(Scope("requester", requester, policy.requester_epsilon, policy.rho(policy.requester_epsilon),
                           appender.rho_spent(dataset=dataset, requester=requester)))
    return found


def _refusal(scope: Scope, charge: Charge, policy: BudgetPolicy) -> str:
    spent = dp.epsilon_from_rho(scope.rho_spent, policy.delta)
    largest = dp.epsilon_from_rho(scope.rho_remaining, policy.delta)
    asked = f"epsilon {charge.epsilon:g}" + (f" at delta {charge.delta:g}" if charge.mechanism == "gaussian" else
                                             " (pure DP)")
    return (f"privacy budget exceeded for {scope.kind} {scope.name!r}: the request ({asked}) needs rho "
            f"{charge.rho:.6g}, but only rho {scope.rho_remaining:.6g} remains of {scope.rho_total:.6g} "
            f"(epsilon {spent:.4g} spent of a budget of {scope.epsilon:g} at delta {policy.delta:g}; the largest "
            f"request that still fits has epsilon {largest:.4g} at delta {policy.delta:g}). Nothing was computed.")


def admit(ledger: Ledger, policy: BudgetPolicy | None, charge: Charge, *, check_only: bool = False,
          **fields: object) -> LedgerEntry:
    """Record the task and, unless refused, its charge, in one atomic and durable ledger step.

    Parameters
    ----------
    ledger, policy
        The site's ledger and budget (``None``: the site has no DP budget and takes no DP task).
    charge
        The task's privacy cost (:data:`EXACT` for a task without DP).
    check_only
        A pre-check (``dp.phase = check``): record ``checked`` or ``refused``, charge nothing (only
        ``accepted`` entries count as spent; the others show the ρ that was asked for).
    fields
        Ledger fields describing the task (requester, study, round, request_id, analysis, ...).

    Returns
    -------
    LedgerEntry
        The ``accepted`` (or ``checked``) entry; a ``released``/``aborted`` entry refers to its ``seq``.

    Raises
    ------
    BudgetExceededError
        The request would exceed a budget (the refusal is committed first).
    PrivacyError
        A DP task at a site without budget, or a non-DP task at a site that requires DP (recorded too).
    """
    cost = {"mechanism": charge.mechanism, "rho": charge.rho, "epsilon": charge.epsilon, "delta": charge.delta,
            "budget": policy.to_json() if policy is not None else ""}
    error: PrivacyError | None = None
    with ledger.transaction() as appender:
        if charge.is_dp and policy is None:
            error = PrivacyError(f"site {ledger.site!r} has no differential-privacy budget configured "
                                 f"([budget] in its site.toml) and refuses DP releases")
        elif not charge.is_dp and policy is not None and policy.require_dp:
            error = PrivacyError(f"site {ledger.site!r} releases only differentially private statistics "
                                 f"([budget] require_dp); request DP noise (e.g. --dp-epsilon)")
        elif charge.is_dp and policy is not None:
            requester = str(fields.get("requester", ""))
            for scope in scopes(appender, policy, study=str(fields.get("study", "")), requester=requester):
                if scope.rho_spent + charge.rho > scope.rho_total * (1.0 + RHO_TOLERANCE):
                    error = BudgetExceededError(_refusal(scope, charge, policy))
                    break
        if error is not None:
            appender.append(**{**fields, **cost, "kind": "refused", "message": str(error)})
        else:
            kind = "checked" if check_only else "accepted"
            entry = appender.append(**{**fields, **cost, "kind": kind})
    if error is not None:
        raise error
    return entry


def remaining(ledger: Ledger, policy: BudgetPolicy | None, *, study: str = "",
              requester: str | None = None) -> dict[str, float]:
    """Budget state for Describe (``SiteInfo.budget``): empty without a budget.

    Keys: ``epsilon_total``, ``delta_total``, ``rho_total``, ``rho_spent``, ``epsilon_spent`` (the
    dataset's), ``rho_remaining`` and ``epsilon_remaining`` (the largest further release, at
    ``delta_total``, that every applicable scope still admits), and ``study_*``/``requester_*``
    totals and spending when those caps are configured.
    """
    if policy is None:
        return {}
    with ledger.transaction() as appender:
        found = scopes(appender, policy, study=study, requester=requester)
    dataset = found[0]
    state = {"epsilon_total": policy.epsilon, "delta_total": policy.delta, "rho_total": dataset.rho_total,
             "rho_spent": dataset.rho_spent, "epsilon_spent": dp.epsilon_from_rho(dataset.rho_spent, policy.delta)}
    for scope in found[1:]:
        state[f"{scope.kind}_epsilon_total"] = scope.epsilon
        state[f"{scope.kind}_rho_spent"] = scope.rho_spent
        state[f"{scope.kind}_epsilon_spent"] = dp.epsilon_from_rho(scope.rho_spent, policy.delta)
    rho_remaining = min(scope.rho_remaining for scope in found)
    state["rho_remaining"] = rho_remaining
    state["epsilon_remaining"] = dp.epsilon_from_rho(rho_remaining, policy.delta)
    return state


def _number(table: dict, key: str, where: str, *, positive: bool = True, below_one: bool = False) -> float | None:
    value = table.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: [budget] {key} must be a number, got {value!r}")
    if (positive and not 0.0 < value <= dp.MAX_EPSILON) or (below_one and not 0.0 < value < 1.0):
        limits = "(0, 1)" if below_one else f"(0, {dp.MAX_EPSILON:g}]"
        raise ConfigError(f"{where}: [budget] {key} = {value!r} must be in {limits}")
    return float(value)


def policy_from_toml(table: object, where: str) -> BudgetPolicy | None:
    """``[budget]`` of a site config (``None`` when absent): ``epsilon`` (required), ``delta``
    (default 1e-6), ``study_epsilon``, ``requester_epsilon``, ``require_dp``; errors name the key."""
    if table is None:
        return None
    table = checked_table(table, f"{where} [budget]",
                          {"epsilon", "delta", "study_epsilon", "requester_epsilon", "require_dp"})
    epsilon = _number(table, "epsilon", where)
    if epsilon is None:
        raise ConfigError(f"{where}: missing key [budget] epsilon")
    require_dp = table.get("require_dp", False)
    if not isinstance(require_dp, bool):
        raise ConfigError(f"{where}: [budget] require_dp must be true or false, got {require_dp!r}")
    delta = _number(table, "delta", where, positive=False, below_one=True)
    return BudgetPolicy(epsilon=epsilon, delta=1e-6 if delta is None else delta,
                        study_epsilon=_number(table, "study_epsilon", where),
                        requester_epsilon=_number(table, "requester_epsilon", where), require_dp=require_dp)


def render_policy(policy: BudgetPolicy | None) -> list[str]:
    """TOML lines of ``[budget]`` (none without a policy), for ``fedgwas-site init``."""
    if policy is None:
        return []
    lines = ["", "[budget]", f"epsilon = {policy.epsilon!r}", f"delta = {policy.delta!r}"]
    lines += [f"{key} = {value!r}" for key, value in (("study_epsilon", policy.study_epsilon),
                                                       ("requester_epsilon", policy.requester_epsilon)) if value is not None]
    return lines + (["require_dp = true"] if policy.require_dp else [])
